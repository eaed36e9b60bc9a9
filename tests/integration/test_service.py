"""The controller loop on the simulated cluster: convergence, hot reload, HTTP endpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.simulated import SimulatedCluster
from controller.engine.loop import Controller
from controller.model.events import Dirty
from tests import cibs
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


def make_controller(tmp_path: Path) -> tuple[Controller, SimulatedCluster, Path]:
    sim, store, desired = simulated(tmp_path)
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    return ctl, sim, desired


def test_loop_converges_and_then_does_nothing(tmp_path: Path) -> None:
    ctl, sim, _ = make_controller(tmp_path)
    first = ctl.run_pass()
    assert first.error is None and first.outcomes and all(o.applied for o in first.outcomes)
    second = ctl.run_pass()
    assert second.decisions == () and second.outcomes == ()
    assert cibs.locate(sim.cib_file, "vm-web01") == ["kvm2"]
    # libvirt's test driver for kvm2 now lists web01, with its console port.
    assert "web01" in sim.domains()["kvm2"]


def test_desired_edit_moves_the_vm_and_an_invalid_edit_changes_nothing(tmp_path: Path) -> None:
    ctl, sim, desired = make_controller(tmp_path)
    ctl.run_pass()
    ctl.run_pass()
    # The embedded cluster holds an operator's `pcs resource ban vm-web02 kvm3`: kvm-warden
    # keeps it; the operator clears it (`pcs resource clear`) before asking for kvm3.
    assert "cli-ban-vm-web02-on-kvm3" in cibs.tool(
        ["cibadmin", "--query", "--scope", "constraints"], sim.cib_file)
    cibs.tool(["crm_resource", "--clear", "--resource", "vm-web02"], sim.cib_file)
    text = desired.read_text()
    desired.write_text(text.replace("    placement:\n      prefer: kvm1\n",
                                    "    placement:\n      prefer: kvm3\n"))
    time.sleep(0.01)
    assert ctl.desired.poll() is True and ctl.desired.generation == 2
    result = ctl.run_pass(now=time.time() + 60)  # past the guard's cooldown for the object
    assert [o.action.id for o in result.outcomes if o.applied] == ["warden-prefer-vm-web02"]  # type: ignore[union-attr]
    assert cibs.locate(sim.cib_file, "vm-web02") == ["kvm3"]

    before = sim.cib_file.read_bytes()
    desired.write_text(text.replace("state: running", "state: sleeping", 1))
    os.utime(desired, (time.time() + 5, time.time() + 5))
    assert ctl.desired.poll() is False
    assert ctl.desired.errors and re.match(r".*desired\.yaml:\d+: vms\[0\]\.state: ",
                                           ctl.desired.errors[0])
    assert ctl.desired.generation == 2  # the last good state stays in force
    result = ctl.run_pass(now=time.time() + 120)
    assert result.decisions == ()
    assert sim.cib_file.read_bytes() == before


def test_run_serves_metrics_status_and_readiness(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.app.cli", "run", "--simulate", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", line)
            url = m.group(1) if m else None
        assert url, "no metrics URL printed"
        body = ""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                time.sleep(0.2)
        # The first pass holds its patch while the scheduler previews it (off the loop's
        # thread); the pass after the preview admits and applies it.
        admitted = 'kvm_warden_actions_total{kind="SetLocation",verdict="admitted"}'
        while True:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
                body = r.read().decode()
            if admitted in body or time.time() > deadline:
                break
            time.sleep(0.2)
        assert admitted in body
        assert 'kvm_warden_actions_total{kind="SetLocation",verdict="previewing"}' in body
        assert "kvm_warden_cluster_quorate 1.0" in body
        assert "kvm_warden_desired_state_valid 1.0" in body
        with urllib.request.urlopen(f"{url}/status", timeout=5) as r:
            status = r.read().decode()
        assert '"vm": "web01"' in status and '"kvm2"' in status
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 0


def test_libvirt_events_give_incremental_passes_and_alerts_full_ones(tmp_path: Path) -> None:
    """docs/architecture.md, "A pass": crm_mon on resync and after alerts, not per libvirt event."""
    sim, store, _ = simulated(tmp_path, poll=False)
    crm_mon_runs = []

    def observe():  # type: ignore[no-untyped-def]
        crm_mon_runs.append(time.time())
        return sim.read()

    ctl = Controller(source=observe, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    results = []
    done = threading.Event()

    def on_pass(r):  # type: ignore[no-untyped-def]
        results.append(r)
        if len(results) >= 5:
            done.set()

    t = threading.Thread(target=ctl.run_forever, kwargs={"on_pass": on_pass}, daemon=True)
    t.start()
    try:
        deadline = time.time() + 30
        while len(results) < 2 and time.time() < deadline:  # first pass applies, second settles
            time.sleep(0.05)
        runs = len(crm_mon_runs)
        ctl.mark(frozenset({Dirty("domain", "web01"), Dirty("domain", "db01")}))
        while len(results) < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert results[2].scope == "incremental" and len(crm_mon_runs) == runs
        ctl.mark(frozenset({Dirty("alert", "vm-web01")}))
        while len(results) < 4 and time.time() < deadline:
            time.sleep(0.05)
        assert results[3].scope == "full" and len(crm_mon_runs) == runs + 1
    finally:
        ctl.stop()
        t.join(timeout=10)


def test_an_invalid_desired_file_is_a_critical_finding_in_runs_output(tmp_path: Path) -> None:
    from controller.app.run import summarize

    ctl, _, desired = make_controller(tmp_path)
    ctl.run_pass()
    desired.write_text(desired.read_text().replace("dry_run: false", "dry_run: nope"))
    time.sleep(0.01)
    assert ctl.desired.poll() is False and ctl.desired.errors
    result = ctl.run_pass()
    (f,) = [f for f in result.findings if f.kind == "desired-invalid"]
    assert f.severity == "critical" and "policy.dry_run" in f.message
    assert "the last good file stays in force (generation 1" in f.message
    assert "! critical: " + f.message in summarize(result, ctl)
