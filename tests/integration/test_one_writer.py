"""One pipeline, one writer: `plan --apply` runs the service's pass over the service's ledger,
a second writer is refused and named, and the preview judges the cluster as it is now."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.audit import read
from controller.engine.desired_store import DesiredStore
from controller.engine.ledger import LedgerFile
from controller.engine.loop import Controller
from controller.engine.observe import pacemaker_source
from controller.engine.preview import BackgroundPreviewer, InlinePreviewer
from controller.model.actions import SetLocation
from tests import cibs
from tests.cibs import EXAMPLE, ROOT, SEED, cli
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


def prefer_web02_on_kvm3(desired: Path, cib_file: Path) -> None:
    """The operator clears their ban (`pcs resource clear`) and asks for web02 on kvm3."""
    cibs.tool(["crm_resource", "--clear", "--resource", "vm-web02"], cib_file)
    desired.write_text(desired.read_text().replace("    placement:\n      prefer: kvm1\n",
                                                   "    placement:\n      prefer: kvm3\n"))


def test_plan_apply_honours_the_cooldown_the_service_recorded(tmp_path: Path) -> None:
    sim, store, desired = simulated(tmp_path)
    state = tmp_path / "state"
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle, ledger_file=LedgerFile(state))
    first = ctl.run_pass()
    assert "warden-prefer-vm-web02" in {getattr(o.action, "id", None)
                                        for o in first.outcomes if o.applied}
    prefer_web02_on_kvm3(desired, sim.cib_file)
    # The service changed warden-prefer-vm-web02 a moment ago: its 10 s cooldown holds for
    # plan --apply too, which shares the service's ledger.
    out = cli("plan", "--desired", str(desired), "--cib", str(sim.cib_file), "--apply",
              "--state-dir", str(state), "--json")
    assert out.returncode == 2, out.stderr
    doc = json.loads(out.stdout)  # stdout is the JSON alone
    verdicts = {a["id"]: a["verdict"] for a in doc["actions"] if a["kind"] == "SetLocation"}
    assert verdicts["warden-prefer-vm-web02"] == "cooldown"
    assert cibs.locate(sim.cib_file, "vm-web02") == ["kvm1"]
    refused = [r for r in read(state) if r.outcome == "refused"]
    assert [(r.verdict, r.who.startswith("user:")) for r in refused] == [("cooldown", True)]
    # The same plan with a ledger of its own would have moved it: the ledger is what refused.
    fresh = cli("plan", "--desired", str(desired), "--cib", str(sim.cib_file), "--json")
    assert {a["id"]: a["verdict"] for a in json.loads(fresh.stdout)["actions"]
            }["warden-prefer-vm-web02"] == "admitted"


def test_what_plan_apply_did_spends_the_services_limits(tmp_path: Path) -> None:
    sim, store, desired = simulated(tmp_path)
    state = tmp_path / "state"
    applied = cli("plan", "--desired", str(desired), "--cib", str(sim.cib_file), "--apply",
                  "--state-dir", str(state))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    sim.settle()
    prefer_web02_on_kvm3(desired, sim.cib_file)
    store.poll()
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle, ledger_file=LedgerFile(state))
    result = ctl.run_pass()
    verdicts = {d.action.key: d.verdict.reason for d in result.decisions}
    assert verdicts["constraint:warden-prefer-vm-web02"] == "cooldown"


def start_service(desired: Path, cib_file: Path, state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.app.cli", "run", "--no-agent", "--desired",
         str(desired), "--cib", str(cib_file), "--state-dir", str(state), "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.time() + 60
    while time.time() < deadline:  # the metrics line is printed once the lock is held
        line = proc.stdout.readline()
        if "/metrics" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"the service did not start: {err[-2000:]}")


def test_a_second_writer_is_refused_and_named(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    proc = start_service(EXAMPLE, work, tmp_path / "service-state")
    try:
        # Another state directory does not make a second writer: a CIB file's lock is by it.
        out = cli("plan", "--desired", str(EXAMPLE), "--cib", str(work), "--apply",
                  "--state-dir", str(tmp_path / "other"))
        assert out.returncode == 3, out.stdout + out.stderr
        assert re.search(rf"kvm-warden controller \(pid {proc.pid} on \S+, since ", out.stderr)
        assert out.stdout == ""
        again = cli("run", "--no-agent", "--desired", str(EXAMPLE), "--cib", str(work),
                    "--http-port", "-1", "--passes", "1")
        assert again.returncode == 3 and f"pid {proc.pid}" in again.stderr
        # Planning without --apply writes nothing and is always allowed.
        assert cli("plan", "--desired", str(EXAMPLE), "--cib", str(work)).returncode in (0, 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    # The lock went with its holder.
    later = cli("plan", "--desired", str(EXAMPLE), "--cib", str(work), "--apply")
    assert later.returncode in (0, 2), later.stdout + later.stderr


def moved_in_status_only(work: Path, rid: str, src: str, dst: str) -> None:
    """Pacemaker moved the VM (a recovery, a failover): its status says so, the configuration
    version stays."""
    out = work.with_suffix(".moved.xml")
    subprocess.run(["crm_simulate", "-x", str(work), "-O", str(out), "-i",
                    f"{rid}_stop_0@{src}=0", "-i", f"{rid}_start_0@{dst}=0"],
                   capture_output=True, timeout=120, check=True)
    shutil.move(out, work)


def test_the_preview_predicts_from_where_the_vm_runs_now(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    source = pacemaker_source(str(work))
    cached = source().cib  # the reader keeps this CIB until the configuration changes
    assert cached is not None and cibs.locate(work, "vm-web01") == ["kvm1"]
    moved_in_status_only(work, "vm-web01", "kvm1", "kvm3")
    assert source().cib == cached  # same configuration version: the cached CIB is stale
    store = DesiredStore(str(EXAMPLE))
    store.poll()
    ctl = Controller(source=source, actuator=PacemakerActuator(str(work)), desired=store)
    result = ctl.run_pass()
    pv = ctl.view.preview
    assert pv is not None and pv.error is None
    web01 = [(s.action, s.from_node, s.to_node) for s in pv.steps if s.resource == "vm-web01"]
    assert web01 == [("migrate", "kvm3", "kvm2")]  # not kvm1 -> kvm2, where it ran before
    assert any(o.applied for o in result.outcomes)


def test_the_baseline_is_computed_once_per_reading(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    previewer = InlinePreviewer(PacemakerActuator(str(work)).query)
    one = SetLocation(reconciler="t", why="t", id="warden-prefer-vm-web01", rsc="vm-web01",
                      node="kvm2", score="1000")
    two = SetLocation(reconciler="t", why="t", id="warden-prefer-vm-web02", rsc="vm-web02",
                      node="kvm1", score="1000")
    first = previewer((one,), None, 60)
    second = previewer((one, two), None, 60)
    assert first is not None and second is not None
    assert (first.simulations, second.simulations) == (2, 1)
    assert {s.resource for s in second.steps} == {"vm-web01", "vm-web02"}
    moved_in_status_only(work, "vm-web01", "kvm1", "kvm3")  # a new reading: a new baseline
    third = previewer((one,), None, 60)
    assert third is not None and third.simulations == 2


def test_passes_go_on_while_a_slow_preview_runs(tmp_path: Path) -> None:
    sim, store, _ = simulated(tmp_path)
    actuator = PacemakerActuator(str(sim.cib_file))
    release, asked = threading.Event(), threading.Event()

    def slow_cib() -> bytes:  # the scheduler at 16 x 1,000 takes ~20 s; here it waits for us
        asked.set()
        assert release.wait(60)
        return actuator.query()

    ctl = Controller(source=sim.read, actuator=actuator, desired=store,
                     after_apply=sim.settle)
    ready = threading.Event()
    ctl.previewer = BackgroundPreviewer(slow_cib, ready.set)
    first = ctl.run_pass()
    assert asked.wait(10)
    held = {d.verdict.reason for d in first.decisions if d.action.reconciler == "placement"}
    assert held == {"previewing"} and not first.outcomes
    # A paused guest, a finding, /status: an incremental pass completes meanwhile.
    incremental = ctl.run_pass(only=frozenset({"web01"}))
    assert incremental.scope == "incremental" and incremental.error is None
    assert ctl.previewer.busy
    release.set()
    assert ready.wait(60)
    applied = ctl.run_pass()
    assert "warden-prefer-vm-web01" in {getattr(o.action, "id", None)
                                        for o in applied.outcomes if o.applied}


def test_a_preview_of_another_configuration_is_not_used(tmp_path: Path) -> None:
    sim, store, _ = simulated(tmp_path)
    actuator = PacemakerActuator(str(sim.cib_file))
    ready = threading.Event()
    ctl = Controller(source=sim.read, actuator=actuator, desired=store, after_apply=sim.settle)
    ctl.previewer = BackgroundPreviewer(actuator.query, ready.set)
    ctl.run_pass()
    assert ready.wait(60)
    # Somebody changes the configuration after the preview: it no longer describes the patch.
    cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "cluster-recheck-interval",
               "--update", "3min"], sim.cib_file)
    ready.clear()
    again = ctl.run_pass()
    assert not again.outcomes
    assert {d.verdict.reason for d in again.decisions
            if d.action.reconciler == "placement"} == {"previewing"}
    assert ready.wait(60)
    assert any(o.applied for o in ctl.run_pass().outcomes)


def test_no_desired_state_means_no_writer_lock_leak(tmp_path: Path) -> None:
    # A refused start (invalid file) leaves no lock holder behind for the next writer.
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nvms: 3\n")
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    assert cli("run", "--no-agent", "--desired", str(bad), "--cib", str(work),
               "--http-port", "-1").returncode == 1
    assert cli("plan", "--desired", str(EXAMPLE), "--cib", str(work), "--apply"
               ).returncode in (0, 2)


def test_no_change_while_the_state_directory_has_no_room_for_its_audit(tmp_path: Path) -> None:
    """A full state directory (a real 2 MiB tmpfs, filled) holds every change with
    `audit-unwritable`: a change that could not be recorded is not made. Once there is room,
    the same plan applies and its records are there."""
    sim, _, desired = simulated(tmp_path)
    prefer_web02_on_kvm3(desired, sim.cib_file)
    state, out = tmp_path / "state", tmp_path / "out"
    state.mkdir()
    out.mkdir()
    plan = " ".join([sys.executable, "-m", "controller.app.cli", "plan", "--desired",
                     str(desired), "--cib", str(sim.cib_file), "--apply", "--state-dir",
                     str(state), "--json"])
    script = (f"set -e; mount -t tmpfs -o size=2m tmpfs {state}; "
              f"dd if=/dev/zero of={state}/fill bs=64k 2>/dev/null || true; "
              f"{plan} > {out}/full.json || echo $? > {out}/full.rc; "
              f"cp {sim.cib_file} {out}/cib-full.xml; rm {state}/fill; "
              f"{plan} > {out}/room.json || echo $? > {out}/room.rc; "
              f"cp {state}/audit.jsonl {out}/audit.jsonl")
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                   cwd=ROOT, check=True, timeout=300)
    full = json.loads((out / "full.json").read_text())
    assert {a["verdict"] for a in full["actions"]} == {"audit-unwritable"}
    assert "warden-prefer-vm-web02" in {a.get("id") for a in full["actions"]}
    assert "kB free" in full["actions"][0]["detail"]
    assert 'id="warden-prefer-vm-web02"' not in (out / "cib-full.xml").read_text()
    room = json.loads((out / "room.json").read_text())
    assert {a.get("id"): a["verdict"] for a in room["actions"]}["warden-prefer-vm-web02"] == \
        "admitted"
    assert 'id="warden-prefer-vm-web02"' in sim.cib_file.read_text()
    applied = [r.action for r in read(out) if r.outcome == "applied"]
    assert any("warden-prefer-vm-web02" in a for a in applied)
