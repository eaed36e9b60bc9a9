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
from controller.engine.loop import Controller, PassResult
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


WHERE = {"vm-a": "kvm1", "vm-b": "kvm1", "vm-c": "kvm2", "vm-d": "kvm2", "vm-e": "kvm3"}


def cluster(tmp_path: Path, sizes: dict[str, int] | None = None, desired_text: str = DESIRED
            ) -> tuple[Controller, Store, Path]:
    """VMs a..e on their nodes (WHERE), each of `sizes` MiB (VM_MIB), hosts of HOST_MIB; the
    controller on it with `desired_text`."""
    sizes = sizes or dict.fromkeys(VMS, VM_MIB)
    prefer = "".join(f'<rsc_location id="l-{r}" rsc="{r}" node="{n}" score="100"/>'
                     for r, n in WHERE.items())
    cib_file = simulate(tmp_path / "cib.xml", cib("".join(vm(r) for r in VMS), prefer))
    for rid, name in ((r, n) for r in VMS for n in ("hv_memory", "host_memory")):
        # what VirtualDomain writes itself (its autoset_utilization_* options, the lab's)
        cibs.tool(["crm_resource", "--resource", rid, "--utilization", "--set-parameter",
                   name, "--parameter-value", str(sizes[rid])], cib_file)
    desired = tmp_path / "desired.yaml"
    desired.write_text(desired_text)
    store_d = DesiredStore(str(desired))
    store_d.poll()
    store = Store()
    for seq, node in enumerate(NODES, start=1):  # the agents' listings, as the bus brings them
        doms = tuple(Domain(name=r.removeprefix("vm-"), state="running", vcpus=1,
                            memory_kib=sizes[r] * 1024) for r, n in WHERE.items() if n == node)
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
    assert util["vm-a"] == {"cpu": "1", "memory": str(VM_MIB + 64), "hv_memory": str(VM_MIB),
                            "host_memory": str(VM_MIB)}
    node = next(n for n in root.iter("node") if n.get("uname") == "kvm1")
    assert {nv.get("name"): nv.get("value") for nv in node.find("utilization").iter("nvpair")
            } == {"cpu": "4", **dict.fromkeys(("memory", "hv_memory", "host_memory"),
                                              str(HOST_MIB - 1024))}
    assert 'name="placement-strategy" value="utilization"' in cibs.tool(
        ["cibadmin", "--query", "--scope", "crm_config"], cib_file)
    subprocess.run(["crm_verify", "-x", str(cib_file)], check=True, capture_output=True,
                   timeout=60)
    # Every VM fits where it runs: the scheduler moves nothing.
    settled = simulate(tmp_path / "settled.xml", cib_file.read_text())
    assert {r: cibs.locate(settled, r) for r in VMS} == before


def _left_stopped_by_crm_simulate(cib_file: Path, node: str) -> list[str]:
    """Pacemaker's own answer: execute the transition of `node`'s failure (of each node of
    "kvm1+kvm2" at once), read crm_mon."""
    out = cib_file.with_name(f"failed-{node}.xml")
    fail = [a for n in node.split("+") for a in ("--node-fail", n)]
    subprocess.run(["crm_simulate", "-x", str(cib_file), *fail, "-S", "-O",
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
    # N+2 (capacity.tolerate: 2): two nodes lost at once leave one node for five VMs.
    out = cibs.cli("capacity", "--cib", str(cib_file), "--json", "--tolerate", "2")
    assert out.returncode == 2
    groups = {r["node"]: r for r in json.loads(out.stdout)}
    assert set(groups) == {*NODES, "kvm1+kvm2", "kvm1+kvm3", "kvm2+kvm3"}
    for pair in ("kvm1+kvm2", "kvm1+kvm3", "kvm2+kvm3"):
        assert groups[pair]["stopped"] == _left_stopped_by_crm_simulate(cib_file, pair), pair
        assert len(groups[pair]["stopped"]) == 2
    text = cibs.cli("capacity", "--cib", str(cib_file), "--tolerate", "2").stdout
    assert "if kvm1 and kvm2 fail: " in text and "left STOPPED" in text


def _checked(tmp_path: Path) -> tuple[Controller, Path, PassResult]:
    """The cluster with the service's checker beside the loop, its verdict known, and the
    pass that reports it."""
    from controller.engine.capacity import FailoverChecker
    from tests.waiting import wait_for

    ctl, _, cib_file = cluster(tmp_path)
    ctl.failover = FailoverChecker(ctl.current_cib)
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    wait_for("the N+1 verdict", lambda: len(ctl.failover.latest) == 3, 60, 0.1)  # type: ignore[union-attr]
    return ctl, cib_file, ctl.run_pass(now=t + 44)


def test_the_service_computes_n_plus_1_beside_the_loop_and_reports_it(tmp_path: Path) -> None:
    """The loop hands each new configuration or placement to the checker (its own thread) and
    reports its latest verdict: a failover-no-room finding per node, the failover metric."""
    from controller.metrics import REGISTRY

    ctl, cib_file, result = _checked(tmp_path)
    no_room = {f.node: f.message for f in result.findings if f.kind == "failover-no-room"}
    assert set(no_room) == set(NODES)
    assert "if kvm3 fails, vm-e would have no room" in no_room["kvm3"]
    assert REGISTRY.get_sample_value("kvm_warden_failover_vms_stopped", {"node": "kvm3"}) == 1.0


def _grow_hosts(store: Store, slots: int) -> None:
    """Every host with room for `slots` VMs (as its agent would report it)."""
    for seq, node in enumerate(NODES, start=10):
        listed = store.state.domains.get(node, {})
        store.fold(envelope(node, seq, DomainSeen(
            node=node, domains=tuple(listed.values()),
            host=HostInfo(cpus=max(4, slots),  # a VM takes a CPU
                          memory_kib=(1024 + slots * (VM_MIB + 64)) * 1024))))


def _drained_then_failed(cib_file: Path, drained: str, failed: str, tmp: Path) -> list[str]:
    """Pacemaker's own answer, by its own tools on a copy: `drained` in standby (crm_attribute),
    its transition executed, then `failed`'s failure executed; the VMs left stopped."""
    copy = tmp / f"drain-{drained}.xml"
    copy.write_bytes(cib_file.read_bytes())
    cibs.tool(["crm_attribute", "--node", drained, "--name", "standby", "--update", "on"], copy)
    settled = simulate(tmp / f"drained-{drained}.xml", copy.read_text())
    return _left_stopped_by_crm_simulate(settled, failed)


def _standby(cib_file: Path, node: str) -> bool:
    root = etree.fromstring(cibs.tool(["crm_mon", "-1", "--output-as=xml"], cib_file).encode())
    return any(n.get("name") == node and n.get("standby") == "true" for n in root.iter("node"))


def test_a_drain_that_breaks_n_plus_1_is_held_and_says_which_vms(tmp_path: Path) -> None:
    """Issue "Room for every VM", 3: hosts of three VMs each hold five VMs with room for any
    node's failure; draining kvm3 would leave two nodes for five VMs, and then kvm1's or
    kvm2's failure leaves a VM without room (crm_simulate says which). Held as
    would-break-failover, naming them; with `admission: warn` it is made, and said."""
    ctl, store, cib_file = cluster(tmp_path)
    _grow_hosts(store, 3)
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    assert report(cib_file)[0] == 0  # N+1 holds today
    expected = {n: _drained_then_failed(cib_file, "kvm3", n, tmp_path) for n in ("kvm1", "kvm2")}
    assert all(expected.values()), expected  # the drain would break it, by Pacemaker's tools
    desired = tmp_path / "desired.yaml"
    desired.write_text(DESIRED.replace("version: 1\n", "version: 1\ncluster:\n  nodes: [kvm1, "
                                       "kvm2, {name: kvm3, state: standby}]\n"))
    assert ctl.desired.poll()
    result = ctl.run_pass(now=t + 33)
    drain = [d for d in result.decisions if d.action.reconciler == "nodes"]
    assert drain and all(d.verdict.reason == "would-break-failover" for d in drain), drain
    detail = drain[0].verdict.detail
    for node, stopped in expected.items():
        assert f"if {node} failed, {', '.join(stopped)} would have no room" in detail, detail
    assert not _standby(cib_file, "kvm3")
    # admission: warn -- made, and said
    desired.write_text(desired.read_text().replace("capacity:\n", "capacity:\n  admission: warn\n"))
    assert ctl.desired.poll()
    result = ctl.run_pass(now=t + 44)
    assert all(d.verdict.admitted for d in result.decisions if d.action.reconciler == "nodes")
    warned = ctl.view.last.findings if ctl.view.last else ()
    assert any(f.kind == "would-break-failover" for f in result.findings + warned)
    assert _standby(cib_file, "kvm3")


def test_n_plus_2_holds_a_drain_that_n_plus_1_admits(tmp_path: Path) -> None:
    """Hosts of five VMs each hold the five VMs after any two nodes' loss (N+2). Draining
    kvm3 keeps N+1 (either other node alone holds five) but breaks N+2: kvm1 and kvm2 failing
    at once would leave no node for them (crm_simulate with both --node-fail says so). With
    `tolerate: 2` the drain is held naming that pair; with `tolerate: 1` it is made."""
    ctl, store, cib_file = cluster(tmp_path)
    _grow_hosts(store, 5)
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    out = cibs.cli("capacity", "--cib", str(cib_file), "--json", "--tolerate", "2")
    assert out.returncode == 0, out.stdout  # N+2 holds today
    desired = tmp_path / "desired.yaml"
    drain = DESIRED.replace("version: 1\n", "version: 1\ncluster:\n  nodes: [kvm1, kvm2, "
                            "{name: kvm3, state: standby}]\n")
    desired.write_text(drain.replace("capacity:\n", "capacity:\n  tolerate: 2\n"))
    assert ctl.desired.poll()
    result = ctl.run_pass(now=t + 33)
    held = [d for d in result.decisions if d.action.reconciler == "nodes"]
    assert held and all(d.verdict.reason == "would-break-failover" for d in held), held
    detail = held[0].verdict.detail
    assert "if kvm1 and kvm2 failed, vm-a, vm-b, vm-c, vm-d, vm-e would have no room" in detail
    assert "if kvm1 failed" not in detail and "if kvm2 failed" not in detail  # N+1 keeps
    assert not _standby(cib_file, "kvm3")
    desired.write_text(drain.replace("capacity:\n", "capacity:\n  tolerate: 1\n"))
    assert ctl.desired.poll()
    result = ctl.run_pass(now=t + 44)
    assert all(d.verdict.admitted for d in result.decisions if d.action.reconciler == "nodes")
    assert _standby(cib_file, "kvm3")


def test_each_node_card_says_whether_every_vm_has_room_if_it_fails(tmp_path: Path) -> None:
    """The verdict on the node cards and in /api/vms: per node, from the checker's latest
    crm_simulate --node-fail (the test compares with Pacemaker's own answer)."""
    from controller.app.web import WebView

    ctl, cib_file, _ = _checked(tmp_path)
    cards = {n["name"]: n for n in json.loads(WebView(ctl).vms_json())["nodes"]}
    for node in NODES:
        stopped = _left_stopped_by_crm_simulate(cib_file, node)
        assert cards[node]["failover_fits"] is (not stopped)
        assert cards[node]["failover_stopped"] == stopped, node


def test_a_vm_without_a_declared_node_starts_where_there_is_most_room(tmp_path: Path) -> None:
    """Placement by size (item 4, static): the file's default `placement_strategy: balanced`,
    with the sizes kvm-warden wrote, makes Pacemaker start a VM that names no node on the node
    with the most free capacity -- not, as its default strategy would, on the node with the
    fewest resources. Both answers are crm_simulate's."""
    ctl, _, cib_file = cluster(
        tmp_path, {"vm-a": 300, "vm-b": 300, "vm-c": 300, "vm-d": 300, "vm-e": 900},
        "version: 1\nvms: []\ncapacity:\n  host_reserve_mib: 1024\n")
    t = time.time()
    for i in range(3):
        ctl.run_pass(now=t + 11 * i)
    assert 'name="placement-strategy" value="balanced"' in cibs.tool(
        ["cibadmin", "--query", "--scope", "crm_config"], cib_file)
    # A new VM, no node named anywhere: its size as VirtualDomain gives it (memory + overhead)
    cibs.tool(["cibadmin", "--create", "--scope", "resources", "--xml-text", vm("vm-f")],
              cib_file)
    for name, mib in (("memory", 364), ("hv_memory", 300), ("host_memory", 300)):
        cibs.tool(["crm_resource", "--resource", "vm-f", "--utilization", "--set-parameter",
                   name, "--parameter-value", str(mib)], cib_file)

    def starts_on(strategy: str) -> list[str]:
        work = tmp_path / f"{strategy}.xml"
        work.write_bytes(cib_file.read_bytes())
        cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "placement-strategy",
                   "--update", strategy], work)
        settled = simulate(tmp_path / f"{strategy}-settled.xml", work.read_text())
        return cibs.locate(settled, "vm-f")

    # kvm1 and kvm2 have 872 MiB free, kvm3 636 MiB (fewest VMs): most room wins
    assert starts_on("balanced") in (["kvm1"], ["kvm2"])
    assert starts_on("default") == ["kvm3"]  # what Pacemaker does without sizes in mind
