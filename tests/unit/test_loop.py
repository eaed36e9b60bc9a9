"""The loop under an alert storm: full passes (crm_mon) are rate-limited, none is lost."""

from __future__ import annotations

import threading
import time

from controller.engine.desired_store import DesiredStore
from controller.engine.loop import MIN_FULL_PASS_SECONDS, Controller
from controller.engine.observe import Reading
from controller.model.desired import parse_desired
from controller.model.events import Dirty, PacemakerSeen
from controller.model.observed import ClusterStatus


def test_an_alert_storm_gives_at_most_one_full_pass_per_interval() -> None:
    reads: list[float] = []

    def source() -> Reading:
        reads.append(time.monotonic())
        return Reading((PacemakerSeen(status=ClusterStatus(with_quorum=True)),), b"<cib/>",
                       time.time())

    ctl = Controller(source=source, actuator=None,  # type: ignore[arg-type]
                     desired=DesiredStore(None, parse_desired("version: 1\n")))
    t = threading.Thread(target=ctl.run_forever, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        while time.monotonic() - started < 4.0:  # ~4,000 forged alerts in 4 s
            ctl.mark(frozenset({Dirty("alert", f"vm-{int(time.monotonic() * 1000)}")}))
            time.sleep(0.001)
        time.sleep(MIN_FULL_PASS_SECONDS + 0.5)
    finally:
        ctl.stop()
        t.join(timeout=10)
    during = [r for r in reads if r >= started]
    # One per interval during the storm, plus the one that catches the storm's tail.
    assert 1 <= len(during) <= 4.0 / MIN_FULL_PASS_SECONDS + 2, len(during)
    assert reads[-1] >= started + 4.0  # the last alerts were not dropped: a pass followed them


def test_a_pass_that_crashes_is_a_failed_pass_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    def source() -> Reading:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("an unexpected bug in a reading")
        return Reading((PacemakerSeen(status=ClusterStatus(with_quorum=True)),), b"<cib/>",
                       time.time())

    ctl = Controller(source=source, actuator=None,  # type: ignore[arg-type]
                     desired=DesiredStore(None, parse_desired("version: 1\n")))
    results = []
    ctl.scheduler.urgent()  # and a second full pass right after the first
    ctl.run_forever(passes=2, on_pass=lambda r: (results.append(r), ctl.scheduler.urgent()))
    assert results[0].error is not None and "unexpected bug" in results[0].error
    assert results[1].error is None


def test_a_finding_is_logged_when_it_appears_and_when_it_is_gone_not_on_every_pass() -> None:
    from structlog.testing import capture_logs

    from controller.model.actions import Finding

    ban = Finding(reconciler="placement", kind="operator-ban", severity="warning",
                  subject="vm-a", message="cli-ban-vm-a-on-kvm1 keeps vm-a off kvm1", rsc="vm-a")
    room = Finding(reconciler="capacity", kind="failover-no-room", severity="critical",
                   subject="kvm2", message="if kvm2 fails, vm-b has no room", node="kvm2")
    with capture_logs() as logs:
        ctl = Controller(source=lambda: None,  # type: ignore[arg-type,return-value]
                         actuator=None,  # type: ignore[arg-type]
                         desired=DesiredStore(None, parse_desired("version: 1\n")))
        for findings in ((ban,), (ban,), (ban, room), (ban, room), (room,), ()):
            ctl._log_findings(findings)
    said = [(e["event"], e["kind"]) for e in logs if e["event"].startswith("finding")]
    assert said == [("finding", "operator-ban"), ("finding", "failover-no-room"),
                    ("finding_gone", "operator-ban"), ("finding_gone", "failover-no-room")]
