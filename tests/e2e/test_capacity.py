"""Room for every VM on the real lab (issue "Room for every VM", 6): the file's `capacity:`
sizes the three guests and the hosts so that each node holds two guests (utilization from
libvirt, the host's reserve chosen here), which makes the 3-node cluster N+1 with one guest a
node. A drain of kvm3 would leave two nodes for three guests, with no room for one of them if
another node then failed: it is held `would-break-failover`, naming it, and kvm3 stays online.
Then kvm3 is killed (real fencing): no guest is left stopped where kvm-warden said there was
room, and its guest runs where Pacemaker's own simulation said it would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from lab import lab
from tests.e2e.conftest import Lab, converged
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SLOT_MIB = 64 + 64  # a lab guest's <memory> and the declared overhead


def vms_doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(lab.warden_get("/api/vms"))
    return doc


def cards() -> dict[str, dict[str, object]]:
    return {str(n["name"]): n for n in vms_doc()["nodes"]}  # type: ignore[attr-defined]


def capacity_yaml() -> str:
    """Two guests a node: the host's memory (as its libvirt reports it) minus a reserve that
    leaves room for 2.5 guests; its CPUs minus a reserve that leaves two."""
    node = cards()["kvm1"]
    host_mib = int(node["host_memory_kib"]) // 1024  # type: ignore[call-overload]
    cpus = int(node["host_cpus"])  # type: ignore[call-overload]
    return ("capacity:\n  placement_strategy: utilization\n  vm_overhead_mib: 64\n"
            f"  host_reserve_mib: {host_mib - int(2.5 * SLOT_MIB)}\n"
            f"  host_reserve_cpus: {max(0, cpus - 2)}\n")


@pytest.fixture
def sized(cluster: Lab) -> Iterator[Lab]:
    wait_for("converged", converged, 180)
    wait_for("the hosts' sizes at the controller",
             lambda: cards()["kvm1"].get("host_memory_kib"), 60)
    text = capacity_yaml()
    try:
        # db01 on kvm3: one guest a node
        cluster.write_desired(db01="    placement: {prefer: kvm3}\n")
        wait_for("db01 on kvm3", lambda: lab.vms_running().get("vm-db01") == ["kvm3"], 120)
        cluster.desired.write_text(cluster.desired.read_text() + text)
        # the sizes in Pacemaker (not held: Pacemaker moves nothing for them), then N+1
        wait_for("the sizes and placement-strategy in the CIB", lambda: 'value="utilization"'
                 in lab.on("kvm1", "cibadmin", "--query", "--scope", "crm_config").stdout, 120)
        wait_for("N+1 proven for every node", lambda: all(
            c.get("failover_fits") is True for c in cards().values()), 180)
        yield cluster
    finally:
        cluster.write_desired()
        # What the section put in the CIB goes with it: placement by score again.
        lab.on("kvm1", "crm_attribute", "--type", "crm_config", "--name", "placement-strategy",
               "--delete", check=False)
        wait_for("converged", converged, 240)


def refusals(verdict: str) -> list[dict[str, object]]:
    return [r for r in lab.audit_records() if r.get("event") == "audit"
            and r.get("outcome") == "refused" and r.get("verdict") == verdict]


def standby(node: str) -> bool:
    out = lab.on("kvm1", "crm_mon", "-1", "--output-as=xml").stdout
    return f'name="{node}"' in out and 'standby="true"' in out.split(f'name="{node}"', 1)[1] \
        .split(">", 1)[0]


def test_a_drain_that_breaks_n_plus_1_is_held_and_a_node_loss_lands_where_predicted(
        sized: Lab) -> None:
    before = len(refusals("would-break-failover"))
    text = sized.desired.read_text()
    sized.desired.write_text(text.replace("nodes: [kvm1, kvm2, kvm3]",
                                          "nodes: [kvm1, kvm2, {name: kvm3, state: standby}]"))
    held = wait_for("the drain held", lambda: refusals("would-break-failover")[before:], 60)
    detail = str(held[0]["detail"])
    assert "would have no room" in detail and "capacity.admission: warn" in detail, detail
    print(f"drain of kvm3 held: {detail}")
    assert not standby("kvm3")
    sized.desired.write_text(text)

    # kvm3 dies: where Pacemaker's own simulation (kvm-warden capacity) said its guest goes
    report = {r["node"]: r for r in json.loads(lab.on(
        "kvm1", *lab.kvm_warden_argv("kvm1"), "capacity", "--json").stdout)}
    on_kvm3 = [rid for rid, nodes in lab.vms_running().items() if nodes == ["kvm3"]]
    assert on_kvm3 and report["kvm3"]["fits"] is True and report["kvm3"]["stopped"] == []
    predicted = report["kvm3"]["placed"]
    assert set(predicted) >= set(on_kvm3) and not set(predicted.values()) & {"kvm3"}
    no_boot = lab.BASE / "no-boot-kvm3"  # fenced, it stays down while the test looks
    no_boot.touch()
    try:
        lab.kill_node("kvm3")
        wait_for("kvm3's guests running where the simulation said", lambda: all(
            lab.vms_running("kvm1").get(rid) == [predicted[rid]] for rid in on_kvm3), 240)
        running = lab.vms_running("kvm1")
        assert all(running.get(rid) for rid in ("vm-web01", "vm-web02", "vm-db01")), running
    finally:
        no_boot.unlink(missing_ok=True)
        lab.restart_node("kvm3")
    wait_for("kvm3 back", lambda: "Online: [ kvm1 kvm2 kvm3 ]" in lab.on(
        "kvm1", "crm_mon", "-1", check=False).stdout, 240)


def test_the_guests_cpu_time_reaches_the_node_cards_and_metrics(cluster: Lab) -> None:
    """Load as rebalancing reads it, on real KVM: each agent's listing carries libvirt's CPU
    time of its guests; two listings make each node's cores used (node cards, /metrics)."""
    wait_for("converged", converged, 180)
    known = wait_for("every node's CPU used known", lambda: all(
        c.get("cpu_used") is not None for c in cards().values() if c.get("online")), 150)
    assert known
    for name, card in cards().items():
        used = card["cpu_used"]
        cpus = float(str(card["host_cpus"]))
        assert isinstance(used, float | int) and 0 <= used <= cpus, (name, used)
    series = {line.split('node="')[1].split('"')[0]
              for line in lab.warden_get("/metrics").splitlines()
              if line.startswith("kvm_warden_node_cpu_load{")}
    assert series == {n for n, c in cards().items() if c.get("online")}
