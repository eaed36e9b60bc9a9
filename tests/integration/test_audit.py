"""Every applied, refused or failed action is one audit record, from the service and from
plan --apply alike, in the state directory; `kvm-warden audit` prints them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.simulated import embedded_desired
from controller.engine.audit import AuditLog, read
from controller.engine.loop import Controller
from controller.engine.observe import Reading
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
ROOT = Path(__file__).parent.parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.app.cli", *argv],
                          capture_output=True, text=True, timeout=120)


def test_plan_apply_leaves_one_record_per_action_applied_or_refused(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    state = tmp_path / "state"
    planned = json.loads(cli("plan", "--desired", str(EXAMPLE), "--cib", str(work),
                             "--json").stdout)["actions"]
    assert cli("plan", "--desired", str(EXAMPLE), "--cib", str(work), "--apply",
               "--state-dir", str(state)).returncode == 0
    recs = list(read(state))
    assert len(recs) == len(planned) and {r.outcome for r in recs} == {"applied"}
    assert {r.action for r in recs} == {a["description"] for a in planned}
    assert all(r.who.startswith("user:") and r.after for r in recs if r.kind != "Cleanup")
    # dry-run: every action refused, each one recorded with the guard's reason
    dry = tmp_path / "dry.yaml"
    dry.write_text(EXAMPLE.read_text().replace("  dry_run: false", "  dry_run: true")
                   .replace("prefer: kvm1", "prefer: kvm3"))
    shutil.copy(SEED, work)
    cli("plan", "--desired", str(dry), "--cib", str(work), "--apply", "--state-dir", str(state))
    refused = [r for r in read(state) if r.outcome == "refused"]
    assert refused and all(r.verdict == "dry-run" for r in refused)
    shown = cli("audit", "--state-dir", str(state), "--vm", "web02", "--since", "1h")
    assert shown.returncode == 0 and "vm-web02" in shown.stdout and "refused" in shown.stdout
    assert "vm-db01" not in shown.stdout


def test_the_service_records_failed_and_applied_changes(tmp_path: Path) -> None:
    sim, store, _ = simulated(tmp_path)
    state = tmp_path / "state"
    vanish = {"now": True}

    def source() -> Reading:
        reading = sim.read()
        if vanish["now"]:  # the CIB goes away between the read and the patch: a tool error
            os.rename(sim.cib_file, tmp_path / "hidden.xml")
        return reading

    ctl = Controller(source=source, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle, audit=AuditLog(state))
    first = ctl.run_pass()
    assert first.decisions and not first.outcomes
    failed = list(read(state))
    assert len(failed) == len(first.decisions) and {r.outcome for r in failed} == {"failed"}
    assert all(r.error and "cibadmin" in r.error for r in failed)
    os.rename(tmp_path / "hidden.xml", sim.cib_file)
    vanish["now"] = False
    # The failed patch spent no cooldown (the ledger records outcomes): applied at once now.
    second = ctl.run_pass()
    applied = [r for r in read(state) if r.outcome == "applied"]
    assert applied and len(applied) == sum(o.applied for o in second.outcomes)


def test_a_refusal_is_recorded_when_it_starts_not_every_pass(tmp_path: Path) -> None:
    sim, store, _ = simulated(tmp_path, embedded_desired().replace("dry_run: false",
                                                                   "dry_run: true"))
    state = tmp_path / "state"
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, audit=AuditLog(state))
    first = ctl.run_pass()
    ctl.run_pass()
    ctl.run_pass()
    recs = list(read(state))
    assert first.decisions and len(recs) == len(first.decisions)
    assert {(r.outcome, r.verdict) for r in recs} == {("refused", "dry-run")}
