"""Against a real corosync and Pacemaker (one node in its own namespaces, see realdaemons).

- the corosync probe reads quorum, sees it change, and reports "unknown" when corosync dies;
- the shipped alert agent, run by Pacemaker itself, delivers a resource stop to the controller;
- `observe` and `plan --apply` work on the live CIB, through the real CIB manager.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.engine.store import Store
from controller.model.events import Dirty, Envelope, QuorumChanged
from probes.corosync.quorum import QuorumWatcher, read_quorum
from probes.pacemaker.alerts import AlertReceiver
from tests.realdaemons import ClusterNode
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pacemaker_tools")]
ROOT = Path(__file__).parent.parent.parent


def locate(node: ClusterNode, rid: str) -> str:
    out = node.run("crm_resource", "--locate", "--resource", rid, check=False)
    return out.stdout + out.stderr


@pytest.fixture
def corosync_two_nodes(tmp_path: Path) -> Iterator[ClusterNode]:
    node = ClusterNode(tmp_path / "cs", nodes=2, pacemaker=False)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def pacemaker_node(tmp_path: Path) -> Iterator[ClusterNode]:
    node = ClusterNode(tmp_path / "pcmk")
    node.start()
    yield node
    node.stop()


def test_quorum_is_read_watched_and_unknown_when_corosync_dies(
    corosync_two_nodes: ClusterNode,
) -> None:
    node = corosync_two_nodes
    # Two nodes configured, one running: 1 of 2 votes is no quorum.
    first = read_quorum("node1", node.prefix)
    assert (first.state, first.quorate, first.expected_votes, first.total_votes) == (
        "ok", False, 2, 1)
    assert first.members == ("node1",)
    seen: list[QuorumChanged] = []
    lock = threading.Lock()

    def publish(q: QuorumChanged) -> None:
        with lock:
            seen.append(q)

    watcher = QuorumWatcher("node1", publish, prefix=node.prefix, retry_seconds=0.5)
    watcher.start()
    try:
        wait_for("a first quorum event", lambda: bool(seen), 20, 0.1)
        node.run("corosync-quorumtool", "-e", "1")  # the operator lowers expected votes
        wait_for("a quorate event", lambda: any(q.quorate for q in seen), 10, 0.1)
        assert next(q for q in seen if q.quorate).expected_votes == 1
        node.stop()
        wait_for("quorum unknown once corosync is gone", lambda: seen[-1].state == "unknown", 10, 0.1)
        assert seen[-1].quorate is None
    finally:
        watcher.stop()


def test_alert_agent_run_by_pacemaker_reaches_the_controller(pacemaker_node: ClusterNode) -> None:
    node = pacemaker_node
    # Pacemaker runs alert agents as hacluster: agent and socket live in a directory it can reach.
    shared = Path(tempfile.mkdtemp(prefix="kvm-warden-alerts-"))
    shared.chmod(0o755)
    agent = shared / "kvm-warden-alert"
    shutil.copy(ROOT / "probes" / "pacemaker" / "kvm_warden_alert.py", agent)
    agent.chmod(agent.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    store = Store()
    got: list[Envelope] = []
    original = store.fold

    def fold(env: Envelope) -> frozenset[str]:
        got.append(env)
        return original(env)

    store.fold = fold  # type: ignore[method-assign]
    receiver = AlertReceiver(str(shared / "alerts.sock"), store.fold)
    try:
        node.run("pcs", "alert", "create", "id=kvm-warden", f"path={agent}")
        node.run("pcs", "alert", "recipient", "add", "kvm-warden", f"value={receiver.endpoint}",
                 "id=kvm-warden-controller")
        node.run("pcs", "resource", "create", "dummy1", "ocf:pacemaker:Dummy")
        wait_for("dummy1 running", lambda: "is running on" in locate(node, "dummy1"), 30, 0.1)
        got.clear()
        stopped_at = time.time()
        node.run("crm_resource", "--resource", "dummy1", "--set-parameter", "target-role",
                 "--meta", "--parameter-value", "Stopped")
        wait_for("the stop alert of dummy1",
                 lambda: any(e.payload.resource == "dummy1"  # type: ignore[union-attr]
                             and e.payload.task == "stop" for e in got), 20, 0.1)
        alert = next(e.payload for e in got if e.payload.task == "stop")  # type: ignore[union-attr]
        assert alert.kind == "resource" and alert.node == "node1" and alert.rc == "0"
        print(f"stop -> alert at the controller: {got[0].sent_at - stopped_at:.2f} s")
        assert Dirty("alert", "dummy1") in store.fold(got[-1])
    finally:
        receiver.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_observe_and_plan_apply_on_the_live_cib(pacemaker_node: ClusterNode,
                                                tmp_path: Path) -> None:
    node = pacemaker_node
    node.run("pcs", "resource", "create", "vm-web01", "ocf:pacemaker:Dummy")
    observe = node.run(sys.executable, "-m", "controller.app.cli", "observe", "--json")
    assert '"dc":"node1"' in observe.stdout and '"with_quorum":true' in observe.stdout
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\ncluster:\n  properties: {cluster-recheck-interval: 2min}\n"
                       "vms:\n  - name: web01\n    placement: {prefer: node1}\n"
                       "    state: stopped\n")
    env_cwd = str(ROOT)
    for _ in range(3):
        applied = subprocess.run([*node.prefix, sys.executable, "-m", "controller.app.cli",
                                  "plan", "--desired", str(desired), "--apply", "--state-dir",
                                  str(tmp_path / "state")], capture_output=True,
                                 text=True, timeout=120, cwd=env_cwd)
        # A live CIB may change between the read and the patch (the new cluster's own status
        # updates): kvm-warden then applies nothing and says "run plan again", as one does.
        if "the CIB changed meanwhile" not in applied.stdout + applied.stderr:
            break
        assert "nothing applied" in applied.stdout + applied.stderr
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "3 applied" in applied.stdout
    cons = node.run("cibadmin", "--query", "--scope", "constraints").stdout
    assert 'id="warden-prefer-vm-web01"' in cons
    prop = node.run("crm_attribute", "--type", "crm_config", "--name",
                    "cluster-recheck-interval", "--query", "--quiet").stdout.strip()
    assert prop == "2min"
    wait_for("vm-web01 stopped", lambda: "is NOT running" in locate(node, "vm-web01"), 20, 0.1)
    again = subprocess.run([*node.prefix, sys.executable, "-m", "controller.app.cli", "plan",
                            "--desired", str(desired)], capture_output=True, text=True,
                           timeout=120, cwd=env_cwd)
    assert again.returncode == 0, again.stdout


def lrm_ops(node: ClusterNode, rid: str) -> dict[str, str]:
    """The resource's operation history on node1: op id -> call-id (the CIB's lrm_rsc_op)."""
    from lxml import etree

    status = etree.fromstring(node.run("cibadmin", "--query", "--scope", "status").stdout.encode())
    return {str(op.get("id")): str(op.get("call-id"))
            for op in status.iterfind(f".//lrm_resource[@id='{rid}']/lrm_rsc_op")}


def test_a_fail_count_reset_keeps_the_operation_history(pacemaker_node: ClusterNode) -> None:
    # The reset-only cleanup (for VMs whose migration history must not be erased) on the real
    # attrd: the fail-count goes, every operation record stays, nothing is restarted.
    # (`crm_failcount --delete` would erase the history: it runs crm_resource --cleanup.)
    node = pacemaker_node
    node.run("pcs", "resource", "create", "vm-web01", "ocf:pacemaker:Dummy",
             "op", "monitor", "interval=2s")
    wait_for("vm-web01 running", lambda: "is running on: node1" in locate(node, "vm-web01"), 20)
    node.run("crm_resource", "--fail", "--resource", "vm-web01", "--node", "node1")

    def failcount() -> int:
        out = node.run("crm_failcount", "--query", "--resource", "vm-web01", "--node", "node1",
                       check=False).stdout
        return int(out.rsplit("value=", 1)[1]) if "value=" in out else -1

    wait_for("a fail-count", lambda: failcount() > 0, 20, 0.2)
    wait_for("recovered", lambda: "is running on: node1" in locate(node, "vm-web01")
             and "vm-web01_last_failure_0" in lrm_ops(node, "vm-web01"), 20, 0.2)
    time.sleep(3)  # the recovery's start and monitor are recorded
    before = lrm_ops(node, "vm-web01")
    script = ("from controller.actuators.pacemaker import PacemakerActuator\n"
              "from controller.model.actions import Cleanup\n"
              "(o,) = PacemakerActuator().apply([Cleanup(reconciler='recovery', why='t', "
              "rsc='vm-web01', node='node1', reset_only=True)])\n"
              "assert o.applied, o.error\n")
    done = subprocess.run([*node.prefix, sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for("the fail-count reset", lambda: failcount() == 0, 20, 0.2)
    time.sleep(3)
    after = lrm_ops(node, "vm-web01")
    # Same records, same call-ids: a cleanup would have erased them and re-probed (new
    # call-ids). The recurring monitor's record is left out: its own runs rewrite it.
    assert {k: v for k, v in after.items() if not k.endswith("_monitor_2000")} == \
        {k: v for k, v in before.items() if not k.endswith("_monitor_2000")}
    assert "vm-web01_last_failure_0" in after and "vm-web01_monitor_2000" in after


def test_the_packages_uidgid_entry_lets_the_agents_user_read_quorum(
        corosync_two_nodes: ClusterNode) -> None:
    """The agent runs as its own user (the unit's User=); corosync refuses its IPC to anyone
    not root or named in uidgid.d. The package ships that entry
    (config/corosync/kvm-warden.uidgid): here it names `nobody`, a user this host has, and is
    picked up by the reload the guide says."""
    node = corosync_two_nodes
    as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               "corosync-quorumtool", "-s", "-p"]
    refused = node.run(*as_user, check=False)
    assert refused.returncode == 1 and "Cannot initialize CMAP service" in refused.stderr
    entry = (ROOT / "config" / "corosync" / "kvm-warden.uidgid").read_text()
    uidgid = node.base / "uidgid.d"  # beside the corosync.conf it runs with (corosync -c)
    uidgid.mkdir()
    (uidgid / "kvm-warden").write_text(entry.replace("uid: kvm-warden", "uid: nobody"))
    node.run("corosync-cfgtool", "-R")
    allowed = node.run(*as_user, check=False)
    assert allowed.returncode in (0, 2) and "Quorate" in allowed.stdout, allowed.stderr
