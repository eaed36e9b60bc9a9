"""Rebalancing by load on `run --simulate`'s cluster (issue "Room for every VM", 6, second half):
four busy guests all on kvm1, the other nodes idle -- an imbalance above 0.4 -- and
`capacity.rebalance: apply`. The service converges to 0.1 or less by live migrations made
through Pacemaker (its scheduler both previews and, here, plays the cluster), one at a time, no
VM moved twice, nothing moved that no action asked for. Where each VM runs is crm_resource's
answer; the loads are the simulated guests' CPU time (controller/app/simulated.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controller import metrics
from controller.actuators.pacemaker import PacemakerActuator
from controller.app.simulated import SimulatedCluster
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller
from controller.model.actions import RemoveConstraint, SetLocation
from controller.model.balance import imbalance
from tests import cibs

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
# cores used; each simulated host has 16 here (seven 2-vCPU guests fit on one node)
BUSY = {"a": 3.2, "b": 2.4, "c": 1.6, "d": 1.2}
CPUS = 16
NODES = ("kvm1", "kvm2", "kvm3")
DESIRED = """version: 1
vms:
""" + "".join(f"  - name: {v}\n" for v in BUSY) + """capacity:
  rebalance: apply
  rebalance_threshold: 0.1
  rebalance_margin: 0.05
  rebalance_hold_seconds: 1
  rebalance_cooldown_seconds: 600
"""


def _primitive(v: str) -> str:
    return (f'<primitive id="vm-{v}" class="ocf" provider="heartbeat" type="VirtualDomain">'
            f'<instance_attributes id="vm-{v}-ia"><nvpair id="vm-{v}-ia-config" name="config" '
            f'value="/kvm/storage/xml/{v}.xml"/></instance_attributes>'
            f'<meta_attributes id="vm-{v}-meta"><nvpair id="vm-{v}-meta-migrate" '
            'name="allow-migrate" value="true"/></meta_attributes></primitive>')


def busy_kvm1(tmp_path: Path) -> SimulatedCluster:
    """The simulated cluster with VMs a..d started while kvm2 and kvm3 were in standby, then
    both back: every busy guest on kvm1, kept there by resource-stickiness."""
    sim = SimulatedCluster(tmp_path.resolve() / "sim", cpus=CPUS)
    sim.create()
    cib = sim.cib_file
    cibs.tool(["cibadmin", "--create", "--scope", "configuration", "--xml-text",
               '<rsc_defaults><meta_attributes id="rsc-options"><nvpair id="rsc-options-'
               'resource-stickiness" name="resource-stickiness" value="100"/></meta_attributes>'
               "</rsc_defaults>"], cib)
    for node in ("kvm2", "kvm3"):
        cibs.tool(["crm_attribute", "--node", node, "--name", "standby", "--update", "on"], cib)
    for v in BUSY:
        cibs.tool(["cibadmin", "--create", "--scope", "resources", "--xml-text", _primitive(v)],
                  cib)
    sim.settle()
    for node in ("kvm2", "kvm3"):
        cibs.tool(["crm_attribute", "--node", node, "--name", "standby", "--update", "off"], cib)
    sim.settle()
    (sim.workdir / "loads.json").write_text(json.dumps(BUSY))
    return sim


def where(sim: SimulatedCluster) -> dict[str, str]:
    return {v: cibs.locate(sim.cib_file, f"vm-{v}")[0] for v in BUSY}


def load_imbalance(placed: dict[str, str]) -> float:
    used = dict.fromkeys(NODES, 0.0)
    for v, node in placed.items():
        used[node] += BUSY[v]
    return imbalance({n: c / CPUS for n, c in used.items()})


def test_busy_guests_are_spread_one_live_migration_at_a_time(tmp_path: Path) -> None:
    sim = busy_kvm1(tmp_path)
    assert where(sim) == dict.fromkeys(BUSY, "kvm1")
    assert load_imbalance(where(sim)) >= 0.4  # 8.4 of 16 cores on kvm1, none elsewhere
    desired = tmp_path / "desired.yaml"
    desired.write_text(DESIRED)
    store = DesiredStore(str(desired))
    store.poll()
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    history = [where(sim)]
    applied = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        result = ctl.run_pass()
        assert result.error is None, result.error
        for o in result.outcomes:
            if o.applied:
                applied.append(o.action)
        now = where(sim)
        if now != history[-1]:
            history.append(now)
            # one at a time: a single VM changed node between two readings
            assert sum(history[-2][v] != now[v] for v in BUSY) == 1, history[-2:]
        constraints = cibs.tool(["cibadmin", "--query", "--scope", "constraints"],
                                sim.cib_file)
        if load_imbalance(now) <= 0.1 and "warden-balance-" not in constraints:
            break  # even, and the last move's constraint removed
        time.sleep(0.5)
    final = history[-1]
    assert load_imbalance(final) <= 0.1, history
    moved = [v for v in BUSY for a, b in zip(history, history[1:], strict=False) if a[v] != b[v]]
    assert moved and len(moved) == len(set(moved)), history  # no VM moved twice
    # Every change was rebalance's own: a move asked, then its constraint removed once done
    # (capacity's sizes and strategy aside); the moves were live migrations (allow-migrate).
    balance = [a for a in applied if a.reconciler == "rebalance"]
    assert [type(a) for a in balance] == [SetLocation, RemoveConstraint] * len(moved)
    assert [(a.rsc, a.node) for a in balance if isinstance(a, SetLocation)] == [
        (f"vm-{v}", b[v]) for v in moved
        for a, b in zip(history, history[1:], strict=False) if a[v] != b[v]]
    assert {a.reconciler for a in applied} <= {"rebalance", "capacity"}
    # The loads as exported: each node's guests' cores over its 16 (the embedded VMs idle).
    ctl.run_pass()
    for node in NODES:
        want = sum(BUSY[v] for v, n in final.items() if n == node) / CPUS
        got = metrics.REGISTRY.get_sample_value("kvm_warden_node_cpu_load", {"node": node})
        assert got is not None and abs(got - want) < 0.01, (node, got, want)
