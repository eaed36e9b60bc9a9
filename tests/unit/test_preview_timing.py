"""The preview's timeout is sized from what the cluster's scheduler measured (issue "Room for
every VM", 5): a scheduler killed at the file's timeout is asked again, given twice as long,
instead of every move being refused at a fixed 30 s on a large cluster (one transition at
16 x 1,000 takes ~35 s here); the service keeps the longer timeout for the next previews."""

from __future__ import annotations

import threading

from lxml import etree

from controller.engine.preview import BackgroundPreviewer, InlinePreviewer, Timing
from controller.model.actions import TransitionStep
from controller.model.errors import ToolError
from probes.pacemaker.read import config_version
from tests.cibs import cib, vm

CIB = cib(vm("vm-web01")).encode()


class NeedsLonger:
    """A scheduler stand-in that needs `seconds`: killed (as commands.run reports it) when
    given less."""

    where = "a scheduler that needs 50 s"

    def __init__(self, seconds: float = 50.0) -> None:
        self.seconds = seconds
        self.timeouts: list[float] = []

    def __call__(self, before: bytes | None, after: bytes, timeout: float
                 ) -> tuple[tuple[TransitionStep, ...] | None, tuple[TransitionStep, ...]]:
        self.timeouts.append(timeout)
        if timeout < self.seconds:
            raise ToolError(["crm_simulate"], f"timed out after {timeout:g} s (killed)",
                            timed_out=True)
        return (), ()


def test_plan_asks_again_given_twice_as_long() -> None:
    slow = NeedsLonger()
    pv = InlinePreviewer(lambda: CIB, simulator=lambda: slow)((), None, 30)
    assert pv is not None and pv.error is None and not pv.timed_out
    assert slow.timeouts == [30, 60]


def test_a_scheduler_that_never_finishes_is_not_proven_safe() -> None:
    slow = NeedsLonger(10_000)
    pv = InlinePreviewer(lambda: CIB, simulator=lambda: slow)((), None, 30)
    assert pv is not None and pv.timed_out and pv.error and "timed out" in pv.error
    assert slow.timeouts == [30, 60, 120]  # two retries, then the answer is "not proven"


def test_the_timeout_follows_the_measured_time() -> None:
    t = Timing()
    assert t.timeout(30) == 30
    t.last_seconds = 25.0  # a preview of this cluster took 25 s
    assert t.timeout(30) == 75
    t.after_timeout = 240.0
    assert t.timeout(30) == 240 and t.timeout(600) == 600


def test_the_service_keeps_no_timed_out_result_and_asks_again_with_longer() -> None:
    slow = NeedsLonger()
    done = threading.Event()
    bg = BackgroundPreviewer(lambda: CIB, done.set, simulator=lambda: slow)
    planned_on = config_version(etree.fromstring(CIB))
    assert bg((), planned_on, 30) is None  # computing
    assert done.wait(10)
    done.clear()
    assert bg((), planned_on, 30) is None  # the timed-out one was not kept: a longer one
    assert done.wait(10)
    pv = bg((), planned_on, 30)
    assert pv is not None and pv.error is None
    assert slow.timeouts == [30, 60]
    assert bg.timing.timeout(30) >= 60  # and the next previews start there
