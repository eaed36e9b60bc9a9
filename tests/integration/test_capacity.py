"""Room for every VM (issue "Room for every VM", items 1 and 2, first part): sizes and capacity
written into Pacemaker from what libvirt reports, and N+1 answered by Pacemaker's own scheduler
(crm_simulate --node-fail), on real tools with CIB_file=. Expected values come from
crm_simulate and crm_mon, not from kvm-warden's code."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from lxml import etree

from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller
from controller.engine.observe import pacemaker_source
from controller.engine.store import Store
from controller.model.events import DomainSeen, envelope
from controller.model.observed import Domain, HostInfo
from tests import cibs
from tests.cibs import NODES, cib, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
VMS = ("vm-a", "vm-b", "vm-c", "vm-d", "vm-e")
HOST_MIB, VM_MIB = 2624, 700  # 1600 MiB offered after the 1024 MiB reserve: two VMs a node
DESIRED = """version: 1
vms: []
capacity:
  placement_strategy: utilization
  vm_overhead_mib: 64
  host_reserve_mib: 1024
"""


def cluster(tmp_path: Path) -> tuple[Controller, Store, Path]:
    where = {"vm-a": "kvm1", "vm-b": "kvm1", "vm-c": "kvm2", "vm-d": "kvm2", "vm-e": "kvm3"}
    prefer = "".join(f'<rsc_location id="l-{r}" rsc="{r}" node="{n}" score="100"/>'
                     for r, n in where.items())
    cib_file = simulate(tmp_path / "cib.xml", cib("".join(vm(r) for r in VMS), prefer))
    desired = tmp_path / "desired.yaml"
    desired.write_text(DESIRED)
    store_d = DesiredStore(str(desired))
    store_d.poll()
    store = Store()
    for seq, node in enumerate(NODES, start=1):  # the agents' listings, as the bus brings them
        doms = tuple(Domain(name=r.removeprefix("vm-"), state="running", vcpus=1,
                            memory_kib=VM_MIB * 1024) for r, n in where.items() if n == node)
        store.fold(envelope(node, seq, DomainSeen(
            node=node, domains=doms, host=HostInfo(cpus=4, memory_kib=HOST_MIB * 1024))))
    ctl = Controller(source=pacemaker_source(str(cib_file)),
                     actuator=PacemakerActuator(str(cib_file)), desired=store_d, store=store)
    return ctl, store, cib_file


def test_sizes_and_capacity_are_written_and_pacemaker_moves_nothing(tmp_path: Path) -> None:
    ctl, _, cib_file = cluster(tmp_path)
    before = {r: cibs.locate(cib_file, r) for r in VMS}
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    root = etree.parse(str(cib_file)).getroot()
    util = {el.getparent().get("id") or el.getparent().get("uname"):
            {nv.get("name"): nv.get("value") for nv in el.iter("nvpair")}
            for el in root.iter("utilization")}
    assert util["vm-a"] == {"cpu": "1", "memory": str(VM_MIB + 64)}
    node = next(n for n in root.iter("node") if n.get("uname") == "kvm1")
    assert {nv.get("name"): nv.get("value") for nv in node.find("utilization").iter("nvpair")
            } == {"cpu": "4", "memory": str(HOST_MIB - 1024)}
    assert 'name="placement-strategy" value="utilization"' in cibs.tool(
        ["cibadmin", "--query", "--scope", "crm_config"], cib_file)
    subprocess.run(["crm_verify", "-x", str(cib_file)], check=True, capture_output=True,
                   timeout=60)
    # Every VM fits where it runs: the scheduler moves nothing.
    settled = simulate(tmp_path / "settled.xml", cib_file.read_text())
    assert {r: cibs.locate(settled, r) for r in VMS} == before


def _left_stopped_by_crm_simulate(cib_file: Path, node: str) -> list[str]:
    """Pacemaker's own answer: execute the transition of `node`'s failure, read crm_mon."""
    out = cib_file.with_name(f"failed-{node}.xml")
    subprocess.run(["crm_simulate", "-x", str(cib_file), "--node-fail", node, "-S", "-O",
                    str(out)], check=True, capture_output=True, timeout=60)
    mon = cibs.tool(["crm_mon", "-1", "--output-as=xml"], out)
    root = etree.fromstring(mon.encode())
    return sorted(str(r.get("id")) for r in root.iter("resource")
                  if r.get("id") in VMS and r.get("active") != "true")


def report(cib_file: Path) -> tuple[int, dict[str, dict[str, object]]]:
    out = cibs.cli("capacity", "--cib", str(cib_file), "--json")
    return out.returncode, {r["node"]: r for r in json.loads(out.stdout)}


def test_n_plus_1_is_pacemakers_answer_node_by_node(tmp_path: Path) -> None:
    ctl, store, cib_file = cluster(tmp_path)
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    code, nodes = report(cib_file)
    assert code == 2  # some node's loss leaves a VM without room
    for node in NODES:
        assert nodes[node]["stopped"] == _left_stopped_by_crm_simulate(cib_file, node), node
    # Two VMs fill a node: any node's loss leaves one VM without room.
    assert all(len(nodes[n]["stopped"]) == 1 and not nodes[n]["fits"] for n in NODES)
    text = cibs.cli("capacity", "--cib", str(cib_file)).stdout
    assert "if kvm3 fails: vm-e -> nowhere; left STOPPED: vm-e (no room)" in text
    # Bigger hosts (three VMs a node): kvm-warden writes the new capacity; now N+1 holds.
    for seq, node in enumerate(NODES, start=10):
        listed = store.state.domains.get(node, {})
        store.fold(envelope(node, seq, DomainSeen(
            node=node, domains=tuple(listed.values()),
            host=HostInfo(cpus=4, memory_kib=(1024 + 3 * (VM_MIB + 64)) * 1024))))
    for i in range(3, 6):
        ctl.run_pass(now=t + 11 * i)
    code, nodes = report(cib_file)
    assert code == 0 and all(nodes[n]["fits"] for n in NODES), nodes
    for node in NODES:
        assert nodes[node]["stopped"] == _left_stopped_by_crm_simulate(cib_file, node) == []
    assert "every VM has room" in cibs.cli("capacity", "--cib", str(cib_file)).stdout


def test_the_service_computes_n_plus_1_beside_the_loop_and_reports_it(tmp_path: Path) -> None:
    """The loop hands each new configuration or placement to the checker (its own thread) and
    reports its latest verdict: a failover-no-room finding per node, the failover metric."""
    from controller.engine.capacity import FailoverChecker
    from controller.metrics import REGISTRY
    from tests.waiting import wait_for

    ctl, _, cib_file = cluster(tmp_path)
    ctl.failover = FailoverChecker(ctl.current_cib)
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    wait_for("the N+1 verdict", lambda: len(ctl.failover.latest) == 3, 60, 0.1)  # type: ignore[union-attr]
    result = ctl.run_pass(now=t + 44)
    no_room = {f.node: f.message for f in result.findings if f.kind == "failover-no-room"}
    assert set(no_room) == set(NODES)
    assert "if kvm3 fails, vm-e would have no room" in no_room["kvm3"]
    assert REGISTRY.get_sample_value("kvm_warden_failover_vms_stopped", {"node": "kvm3"}) == 1.0
