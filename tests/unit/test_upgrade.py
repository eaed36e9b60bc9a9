"""A declared rolling upgrade (issue "Rolling upgrade", 3): read from the cluster each pass,
enforced as a drain of one node at a time through Pacemaker's standby, never two nodes out."""

from __future__ import annotations

import msgspec
import pytest

from controller.model.actions import SetNodeAttribute
from controller.model.desired import DesiredStateError, parse_desired
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import Failure, HostInfo, Node
from controller.model.upgrade import on_release, progress
from reconcilers.all import plan_all
from tests.unit.clusters import ctx, index

FILE = """version: 1
cluster:
  nodes: [kvm1, kvm2, kvm3]
vms:
  - name: a
  - name: b
upgrade:
  to: Debian 13
  order: [kvm1, kvm2, kvm3]
"""


def cluster(vms: dict[str, str | None], releases: dict[str, str],
            nodes: dict[str, Node] | None = None,
            failures: tuple[Failure, ...] = ()) -> ClusterIndex:
    base = index(vms, nodes=nodes, gfs2=True)
    hosts = {n: HostInfo(cpus=4, memory_kib=1 << 23, os=r) for n, r in releases.items()}
    status = msgspec.structs.replace(base.observed.status, failures=failures)
    return build_index(msgspec.structs.replace(base.observed, hosts=hosts, status=status))


OLD = {"kvm1": "Debian 12.12", "kvm2": "Debian 12.12", "kvm3": "Debian 12.12"}


def standby(plan_nodes: dict[str, bool], offline: tuple[str, ...] = ()) -> dict[str, Node]:
    return {n: Node(name=n, online=n not in offline, standby=s) for n, s in plan_nodes.items()}


def attrs(idx: ClusterIndex, text: str = FILE) -> set[tuple[str, str, str]]:
    plan = plan_all(ctx(idx, text))
    return {(a.node, a.name, a.value) for a in plan.actions if isinstance(a, SetNodeAttribute)}


def said(idx: ClusterIndex, text: str = FILE) -> list[tuple[str, str | None, str]]:
    return [(f.kind, f.node, f.message) for f in plan_all(ctx(idx, text)).findings
            if f.reconciler == "upgrade"]


def why(idx: ClusterIndex, text: str = FILE) -> list[tuple[str, str | None, str]]:
    """(kind, node, machine reason) of what the upgrade says."""
    return [(f.kind, f.node, f.reason) for f in plan_all(ctx(idx, text)).findings
            if f.reconciler == "upgrade"]


def test_a_release_matches_its_target_and_finer_versions_only() -> None:
    assert on_release("Debian 13.8", "Debian 13") and on_release("Debian 13", "Debian 13")
    assert not on_release("Debian 130", "Debian 13")
    assert not on_release("Debian 12.12", "Debian 13") and not on_release("", "Debian 13")


def test_a_whole_roll_node_by_node_as_each_pass_reads_it() -> None:
    """kvm1 drained, ready when empty, awaited while down, brought back on 13, verified; then
    kvm2. No state but the cluster's: each pass here is a fresh reading."""
    # 1. start: kvm1 is put in standby (Pacemaker live-migrates a off it)
    idx = cluster({"a": "kvm1", "b": "kvm2"}, OLD)
    assert attrs(idx) == {("kvm1", "standby", "on")}
    ((kind, node, msg),) = said(idx)
    assert (kind, node) == ("upgrade-step", "kvm1") and "vm-a still on it" in msg
    # 2. in standby, a still migrating off: nothing new to write, still draining
    idx = cluster({"a": "kvm1", "b": "kvm2"}, OLD,
                  standby({"kvm1": True, "kvm2": False, "kvm3": False}))
    assert attrs(idx) == set()
    assert said(idx)[0][0] == "upgrade-step"
    # 3. empty: ready to upgrade, said as a warning naming the node
    idx = cluster({"a": "kvm2", "b": "kvm2"}, OLD,
                  standby({"kvm1": True, "kvm2": False, "kvm3": False}))
    ((kind, node, msg),) = said(idx)
    assert (kind, node) == ("upgrade-ready", "kvm1") and "ready to upgrade" in msg
    assert attrs(idx) == set()
    # 4. down for its upgrade: awaited, nothing written, the others untouched
    idx = cluster({"a": "kvm2", "b": "kvm2"}, {**OLD, "kvm1": "Debian 12.12"},
                  standby({"kvm1": True, "kvm2": False, "kvm3": False}, offline=("kvm1",)))
    assert attrs(idx) == set() and said(idx)[0][0] == "upgrade-step"
    assert "waiting for it to come back on Debian 13" in said(idx)[0][2]
    # 5. back on Debian 13, still in standby: brought back online
    back = {**OLD, "kvm1": "Debian 13.8"}
    idx = cluster({"a": "kvm2", "b": "kvm2"}, back,
                  standby({"kvm1": True, "kvm2": False, "kvm3": False}))
    assert attrs(idx) == {("kvm1", "standby", "off")}
    # 6. online, a failed action on it: verified only once cleaned up; kvm2 not touched yet
    failed = (Failure(resource="dlm", node="kvm1", task="monitor", rc=7, status="complete"),)
    idx = cluster({"a": "kvm1", "b": "kvm2"}, back, failures=failed)
    assert attrs(idx) == set()
    ((kind, node, msg),) = said(idx)
    assert (kind, node) == ("upgrade-step", "kvm1") and "failed actions (dlm)" in msg
    # 7. verified: the next node in the order is drained
    idx = cluster({"a": "kvm1", "b": "kvm2"}, back)
    assert attrs(idx) == {("kvm2", "standby", "on")}
    assert said(idx)[0][1] == "kvm2" and "1 of 3 nodes done" in said(idx)[0][2]
    # 8. all on 13: said done, nothing written
    idx = cluster({"a": "kvm1", "b": "kvm2"}, {n: "Debian 13.8" for n in OLD})
    assert attrs(idx) == set()
    assert [k for k, _, _ in said(idx)] == ["upgrade-done"]


def test_never_two_nodes_out() -> None:
    """kvm3 offline: kvm1 is not drained, and the finding says why."""
    idx = cluster({"a": "kvm1"}, OLD, standby({"kvm1": False, "kvm2": False, "kvm3": False},
                                              offline=("kvm3",)))
    assert attrs(idx) == set()
    assert why(idx) == [("upgrade-held", "kvm1", "AnotherNodeOut")]
    assert "kvm3 offline" in said(idx)[0][2]  # which node, told
    # an operator's standby of another node holds it too
    idx = cluster({"a": "kvm1"}, OLD, standby({"kvm1": False, "kvm2": True, "kvm3": False}))
    assert attrs(idx) == set() and why(idx) == [("upgrade-held", "kvm1", "AnotherNodeOut")]


def test_a_failed_action_anywhere_stops_the_upgrade_where_it_is() -> None:
    failed = (Failure(resource="vm-b", node="kvm3", task="monitor", rc=7, status="complete"),)
    idx = cluster({"a": "kvm1", "b": "kvm3"}, OLD, failures=failed)
    assert attrs(idx) == set()
    assert why(idx) == [("upgrade-held", "kvm1", "FailedActions")]
    assert "vm-b on kvm3" in said(idx)[0][2]  # which, told
    # mid-drain too: kvm1 stays in standby, nothing is brought back or drained further
    idx = cluster({"a": "kvm1", "b": "kvm3"}, OLD,
                  standby({"kvm1": True, "kvm2": False, "kvm3": False}), failures=failed)
    assert attrs(idx) == set() and why(idx) == [("upgrade-held", "kvm1", "FailedActions")]


def test_a_node_with_no_report_of_its_release_is_not_drained() -> None:
    idx = cluster({"a": "kvm1"}, {"kvm2": "Debian 12.12", "kvm3": "Debian 12.12"})
    assert attrs(idx) == set()
    assert why(idx) == [("upgrade-held", "kvm1", "ReleaseUnknown")]


def test_resumes_where_it_stands_after_a_controller_failover() -> None:
    """The progress is the cluster's: a fresh controller reading kvm1 done and kvm2 in standby
    and empty says kvm2 is ready, with no memory of its own."""
    up = progress(parse_desired(FILE), cluster(
        {"a": "kvm1", "b": "kvm3"}, {**OLD, "kvm1": "Debian 13.8"},
        standby({"kvm1": False, "kvm2": True, "kvm3": False})))
    assert up is not None
    assert [(p.node, p.step) for p in up.nodes] == [("kvm1", "done"), ("kvm2", "ready"),
                                                     ("kvm3", "waiting")]


def test_the_order_is_checked_against_the_nodes() -> None:
    bad = FILE.replace("order: [kvm1, kvm2, kvm3]", "order: [kvm1, kvm1, kmv3]")
    with pytest.raises(DesiredStateError) as err:
        parse_desired(bad)
    text = str(err.value)
    assert "upgrade.order[1]: node 'kvm1' is already in the order" in text
    assert "upgrade.order[2]: unknown node 'kmv3' (did you mean 'kvm3'?)" in text
