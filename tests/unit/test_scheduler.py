"""The scheduler: typed dirty keys, full and urgent passes, and a plan's requeue time."""

from __future__ import annotations

from controller.engine.scheduler import Scheduler
from controller.model.events import Dirty


def test_marks_accumulate_until_taken_and_wake_the_loop() -> None:
    s = Scheduler()
    s.take()  # the first pass is a full one
    s.mark(frozenset({Dirty("domain", "web01")}))
    s.mark(frozenset({Dirty("domain", "db01")}), full=False)
    assert s.wake.is_set()
    assert s.take() == (False, False, frozenset({Dirty("domain", "web01"),
                                                 Dirty("domain", "db01")}))
    assert s.take() == (False, False, frozenset())


def test_a_deferred_full_pass_keeps_what_the_events_asked_for() -> None:
    s = Scheduler()
    s.take()
    s.defer(True, frozenset({Dirty("alert", "vm-web01")}))
    assert s.take() == (True, False, frozenset({Dirty("alert", "vm-web01")}))


def test_a_plan_asking_to_run_again_gets_an_urgent_full_pass_then_and_only_then() -> None:
    s = Scheduler()
    s.take()
    s.wake.clear()
    s.requeue(100.0)
    assert s.due(99.9) is False and not s.wake.is_set()
    assert s.due(100.0) is True and s.wake.is_set()
    assert s.take() == (True, True, frozenset())
    assert s.due(200.0) is False  # asked once, served once
