"""Every applied, refused or failed action is one audit record, from the service and from
plan --apply alike, in the state directory; `kvm-warden audit` prints them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.simulated import embedded_desired
from controller.engine.audit import AuditLog, read
from controller.engine.loop import Controller
from controller.engine.preview import InlinePreviewer
from tests.cibs import EXAMPLE, SEED, cli
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


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
    actuator = PacemakerActuator(str(sim.cib_file))
    inline = InlinePreviewer(actuator.query)

    def previewer(actions, planned_on, timeout):  # type: ignore[no-untyped-def]
        pv = inline(actions, planned_on, timeout)
        if vanish["now"]:  # the CIB goes away between the preview and the patch: a tool error
            os.rename(sim.cib_file, tmp_path / "hidden.xml")
        return pv

    ctl = Controller(source=sim.read, actuator=actuator, desired=store,
                     after_apply=sim.settle, audit=AuditLog(state), previewer=previewer)
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


def test_audit_without_a_log_says_where_it_looked_instead_of_printing_nothing(
        tmp_path: Path) -> None:
    """Issue "Day one", 5: `audit` printed nothing and exited 0 without the demo's state
    directory, as if no change had ever been made."""
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "controller.app.cli", "audit"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KVM_WARDEN_STATE_DIR": str(tmp_path / "none")})
    assert res.returncode != 0 and res.stdout == ""
    assert f"no audit log in {tmp_path / 'none'}" in res.stderr and "--state-dir" in res.stderr
