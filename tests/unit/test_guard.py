"""The guard's checks, each with the reason an operator sees (docs/architecture.md, "The guard")."""

from __future__ import annotations

from controller.engine.guard import COOLDOWN_SECONDS, FRESHNESS_SECONDS, Guard
from controller.model.actions import Cleanup, SetLocation, SetProperty
from controller.model.desired import Policy
from controller.model.index import build_index
from controller.model.observed import CibConfig, ClusterStatus, Node, ObservedState, Resource, ResourceConfig

NODES = {n: Node(name=n, online=True) for n in ("kvm1", "kvm2", "kvm3")}


def index(*, quorum: bool = True, unmanaged: bool = False, nodes: dict[str, Node] | None = None,
          vms: int = 4, migrating: int = 0):
    res = tuple(
        Resource(id=f"vm-{i}", agent="ocf:heartbeat:VirtualDomain", role="Migrating" if i < migrating
                 else "Started", active=True, nodes=("kvm1",), managed=not unmanaged)
        for i in range(vms)
    )
    cfg = {r.id: ResourceConfig(id=r.id, kind="primitive") for r in res}
    return build_index(ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=quorum, nodes=nodes or NODES, resources=res),
        cib=CibConfig(resources=cfg)))


def move(i: int, node: str = "kvm2") -> SetLocation:
    return SetLocation(reconciler="placement", why="t", id=f"warden-prefer-vm-{i}",
                       rsc=f"vm-{i}", node=node, score="1000")


def test_a_healthy_cluster_admits() -> None:
    assert Guard().admit(move(0), index(), Policy(), 100.0, 100.0).reason == "admitted"


def test_unmanaged_resource_and_maintenance_node_are_refused() -> None:
    assert Guard().admit(move(0), index(unmanaged=True), Policy(), 0, 0).reason == \
        "resource-unmanaged"
    nodes = {**NODES, "kvm2": Node(name="kvm2", online=True, maintenance=True)}
    v = Guard().admit(Cleanup(reconciler="health", why="t", rsc="vm-0", node="kvm2"),
                      index(nodes=nodes), Policy(), 0, 0)
    assert v.reason == "resource-unmanaged" and "kvm2" in v.detail


def test_stale_observation_is_refused() -> None:
    v = Guard().admit(move(0), index(), Policy(), 1000.0, 1000.0 - FRESHNESS_SECONDS - 1)
    assert v.reason == "stale-observation"


def test_cooldown_per_object() -> None:
    g, idx = Guard(), index()
    a = SetProperty(reconciler="properties", why="t", name="x", value="1")
    g.ledger.spend(a, idx, 100.0)
    assert g.admit(a, idx, Policy(), 100.0 + COOLDOWN_SECONDS / 2, None).reason == "cooldown"
    assert g.admit(a, idx, Policy(), 100.0 + COOLDOWN_SECONDS + 1, None).reason == "admitted"


def test_rate_limit_per_kind_per_minute() -> None:
    g, idx = Guard(), index(vms=0)
    policy = Policy(max_actions_per_minute=3)
    for i in range(3):
        g.ledger.spend(SetProperty(reconciler="p", why="t", name=f"p{i}", value="1"), idx, 10.0 + i)
    other = SetProperty(reconciler="p", why="t", name="p9", value="1")
    assert g.admit(other, idx, policy, 20.0, None).reason == "rate-limit"
    # another kind has its own budget; and the window slides after a minute
    assert g.admit(move(0), index(), policy, 20.0, None).reason == "admitted"
    assert g.admit(other, idx, policy, 71.0, None).reason == "admitted"


def test_migrations_in_flight_count_against_the_ceiling() -> None:
    policy = Policy(max_concurrent_migrations=2)
    # Pacemaker already migrates two VMs: a third move waits.
    assert Guard().admit(move(3), index(migrating=2), policy, 0, None).reason == \
        "max-concurrent-migrations"
    # Moves kvm-warden caused count until crm_mon shows them settled.
    g, idx = Guard(), index()
    g.ledger.spend(move(0), idx, 0.0)
    g.ledger.spend(move(1), idx, 0.0)
    assert g.admit(move(2), idx, policy, 0.5, None).reason == "max-concurrent-migrations"
    # A prefer for the node a VM already runs on is not a move.
    assert g.admit(move(2, node="kvm1"), idx, policy, 0.5, None).reason == "admitted"


def test_cluster_wide_refusals_take_precedence() -> None:
    unclean = {**NODES, "kvm3": Node(name="kvm3", unclean=True)}
    assert Guard().admit(move(0), index(quorum=False, nodes=unclean), Policy(), 0, 0).reason == \
        "no-quorum"
    assert Guard().admit(move(0), index(nodes=unclean), Policy(), 0, 0).reason == "node-unclean"
    assert Guard().admit(move(0), index(), Policy(dry_run=True), 0, 0).reason == "dry-run"
