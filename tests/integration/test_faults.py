"""Faults never crash the service: a hung crm_mon is killed and reported, bad XML is an error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.simulated import embedded_desired
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller
from controller.engine.observe import Reading
from controller.metrics import REGISTRY
from controller.model.errors import ToolError
from controller.model.events import PacemakerSeen
from probes.pacemaker.read import read_status

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


def test_a_hung_crm_mon_is_killed_after_its_timeout(tmp_path: Path) -> None:
    fifo = tmp_path / "cib.xml"
    os.mkfifo(fifo)  # the real crm_mon blocks forever reading a CIB from a pipe nobody writes
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"timed out after 0.5 s \(killed\)"):
        read_status(str(fifo), timeout=0.5)
    assert time.monotonic() - started < 5


def test_the_loop_survives_a_failing_observation_and_reports_it(tmp_path: Path) -> None:
    desired = tmp_path / "d.yaml"
    desired.write_text(embedded_desired())
    store = DesiredStore(str(desired))
    store.poll()
    fifo = tmp_path / "cib.xml"
    os.mkfifo(fifo)
    bad = tmp_path / "bad.xml"
    bad.write_text("<cib><configuration>")  # the actuator is never reached

    from probes.pacemaker.crm_mon import parse_crm_mon

    calls = iter([
        lambda: read_status(str(fifo), timeout=0.5),  # the real crm_mon, hung and killed
        lambda: parse_crm_mon(b"<pacemaker-result><summary>", source="crm_mon"),  # cut short
    ])

    def observe():  # type: ignore[no-untyped-def]
        return Reading((PacemakerSeen(status=next(calls)()),), None, time.time())

    before = REGISTRY.get_sample_value("kvm_warden_probe_errors_total",
                                       {"probe": "pacemaker"}) or 0.0
    ctl = Controller(source=observe, actuator=PacemakerActuator(str(bad)), desired=store)
    first = ctl.run_pass()
    second = ctl.run_pass()
    assert first.error and "timed out" in first.error
    assert second.error and "not well-formed" in second.error
    assert REGISTRY.get_sample_value("kvm_warden_probe_errors_total",
                                     {"probe": "pacemaker"}) == before + 2
