"""Balance by load (issue "Room for every VM", 4, dynamic; proposing only): the nodes' CPU load
from libvirt's CPU time between two listings, one proposed live migration at a time with a
threshold, a margin and a cooldown, never against the file's allowed nodes or anti-affinity."""

from __future__ import annotations

import msgspec

from controller.engine.store import Store
from controller.model.actions import RemoveConstraint, SetLocation
from controller.model.balance import Guest, best_move, imbalance, loads
from controller.model.context import Context, LedgerView
from controller.model.desired import parse_desired
from controller.model.events import Dirty, DomainSeen, envelope
from controller.model.index import build_index
from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    Constraints,
    Domain,
    HostInfo,
    LocationConstraint,
    Node,
    ObservedState,
    Resource,
    ResourceConfig,
)
from reconcilers import rebalance

CPUS = {"kvm1": 4, "kvm2": 4, "kvm3": 4}


def guests(**where: tuple[str, float]) -> dict[str, Guest]:
    return {vm: Guest(vm=vm, node=n, cores=c) for vm, (n, c) in where.items()}


def test_the_busiest_nodes_best_vm_moves_to_the_least_busy_node() -> None:
    g = guests(a=("kvm1", 1.2), b=("kvm1", 0.8), c=("kvm1", 0.4), d=("kvm2", 0.4))
    assert loads(g, CPUS) == {"kvm1": 0.6, "kvm2": 0.1, "kvm3": 0.0}
    move = best_move(g, CPUS, threshold=0.3, margin=0.1)
    assert move is not None
    # a (0.3 of a node) to kvm3: loads 0.3 / 0.1 / 0.3 -> imbalance 0.2, the lowest reachable
    assert (move.vm, move.source, move.target) == ("a", "kvm1", "kvm3")
    assert round(move.before, 3) == 0.6 and round(move.after, 3) == 0.2


def test_below_the_threshold_or_under_the_margin_nothing_moves() -> None:
    assert best_move(guests(a=("kvm1", 1.0), b=("kvm2", 0.2)), CPUS, threshold=0.3,
                     margin=0.1) is None  # imbalance 0.25
    # One VM of 1.6 cores: moving it only swaps the busy node (0.4 -> 0.4): never proposed.
    assert best_move(guests(a=("kvm1", 1.6)), {"kvm1": 4, "kvm2": 4}, threshold=0.3,
                     margin=0.1) is None


def test_the_files_allowed_nodes_anti_affinity_and_the_cooldown_are_kept() -> None:
    g = guests(a=("kvm1", 1.2), b=("kvm1", 1.2), d=("kvm2", 0.4))
    g["a"] = Guest(vm="a", node="kvm1", cores=1.2, allowed=frozenset({"kvm1", "kvm2"}))
    g["b"] = Guest(vm="b", node="kvm1", cores=1.2, apart_from=frozenset({"e"}))
    g["e"] = Guest(vm="e", node="kvm3", cores=0.0)
    # b may not join e on kvm3, a may not go there at all: a to kvm2 is what is left
    move = best_move(g, CPUS, threshold=0.3, margin=0.1)
    assert move is not None and (move.vm, move.target) == ("a", "kvm2")
    # a cooling down: b to kvm2 (0.3 / 0.4 / 0.0: imbalance 0.4, down from 0.6)
    move = best_move(g, CPUS, threshold=0.3, margin=0.1, cooling=frozenset({"a"}))
    assert move is not None and (move.vm, move.target, move.after) == ("b", "kvm2", 0.4)
    assert best_move(g, CPUS, threshold=0.3, margin=0.1, cooling=frozenset({"a", "b"})) is None


def test_from_an_imbalance_of_0_4_it_converges_below_0_1_moving_no_vm_twice() -> None:
    g = guests(a=("kvm1", 0.8), b=("kvm1", 0.6), c=("kvm1", 0.6), d=("kvm1", 0.4),
               e=("kvm2", 0.4), f=("kvm3", 0.2))
    assert imbalance(loads(g, CPUS)) >= 0.4
    moved: list[str] = []
    while (move := best_move(g, CPUS, threshold=0.1, margin=0.05,
                             cooling=frozenset(moved))) is not None:
        assert move.vm not in moved
        moved.append(move.vm)
        g[move.vm] = Guest(vm=move.vm, node=move.target, cores=g[move.vm].cores)
    assert imbalance(loads(g, CPUS)) <= 0.1 and len(moved) == len(set(moved)) == 2


def _listing(store: Store, node: str, seq: int, at: float, cpu_ns: int,
             sent: float | None = None) -> frozenset[Dirty]:
    env = envelope(node, seq, DomainSeen(node=node, domains=(
        Domain(name="web01", state="running", cpu_time_ns=cpu_ns, cpu_at=at),)))
    return store.fold(msgspec.structs.replace(env, sent_at=at if sent is None else sent))


def test_the_load_is_libvirts_cpu_time_between_two_listings_of_one_node() -> None:
    store = Store()
    _listing(store, "kvm1", 1, 100.0, 10 * 10**9)
    assert store.state.domains["kvm1"]["web01"].cpu_cores is None  # one sample: not known
    changed = _listing(store, "kvm1", 2, 110.0, 15 * 10**9)
    assert store.state.domains["kvm1"]["web01"].cpu_cores == 0.5  # 5 s of CPU in 10 s
    assert changed == frozenset()  # a load alone makes no VM dirty
    # The same sample replayed later (a snapshot after a reconnect): not a span of no CPU.
    _listing(store, "kvm1", 3, 110.0, 15 * 10**9, sent=130.0)
    assert store.state.domains["kvm1"]["web01"].cpu_cores == 0.5
    # Migrated to kvm2: counted again from there (no sample spans the migration).
    _listing(store, "kvm2", 1, 111.0, 16 * 10**9)
    assert store.state.domains["kvm2"]["web01"].cpu_cores is None


def _ctx(cores: dict[str, float | None], rebalance_mode: str = "propose",
         now: float = 10_000.0, ledger: LedgerView | None = None,
         where: dict[str, str] | None = None,
         moving: tuple[LocationConstraint, ...] = ()) -> Context:
    where = where or {"web01": "kvm1", "web02": "kvm1", "db01": "kvm2"}
    desired = parse_desired(
        "version: 1\nvms:\n  - name: web01\n  - name: web02\n  - name: db01\n"
        f"capacity:\n  rebalance: {rebalance_mode}\n")
    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True,
                             nodes={n: Node(name=n, online=True) for n in CPUS},
                             resources=tuple(Resource(id=f"vm-{v}",
                                                      agent="ocf:heartbeat:VirtualDomain",
                                                      role="Started", active=True, nodes=(n,))
                                             for v, n in where.items())),
        domains={n: {v: Domain(name=v, state="running", since=0.0, cpu_cores=cores[v])
                     for v, vn in where.items() if vn == n} for n in ("kvm1", "kvm2")},
        hosts={n: HostInfo(cpus=4, memory_kib=8 << 20) for n in CPUS},
        cib=CibConfig(resources={f"vm-{v}": ResourceConfig(
            id=f"vm-{v}", kind="primitive", agent="ocf:heartbeat:VirtualDomain") for v in where},
            constraints=Constraints(location=moving)))
    return Context(index=build_index(observed), desired=desired, now=now,
                   ledger=ledger or LedgerView())


def test_the_proposal_is_a_finding_with_its_reason_and_only_on_evidence() -> None:
    (f,) = rebalance.plan(_ctx({"web01": 1.6, "web02": 1.2, "db01": 0.2})).findings
    assert (f.kind, f.reason, f.rsc, f.node) == ("rebalance-proposed", "LoadImbalance",
                                                 "vm-web01", "kvm1")
    assert "move web01 from kvm1 to kvm3" in f.message
    assert rebalance.plan(_ctx({"web01": 1.6, "web02": None, "db01": 0.2})).findings == ()
    assert rebalance.plan(_ctx({"web01": 1.6, "web02": 1.2, "db01": 0.2}, "off")).findings == ()
    # web01 and web02 were moved by rebalancing within the cooldown (600 s): not again yet
    recent = LedgerView(balanced_at={"vm-web01": 9_500.0, "vm-web02": 9_900.0})
    assert rebalance.plan(_ctx({"web01": 1.6, "web02": 1.2, "db01": 0.2},
                               ledger=recent)).findings == ()


LOADS = {"web01": 1.6, "web02": 1.2, "db01": 0.2}


def test_apply_moves_once_the_proposal_has_held_then_lets_go_once_it_is_done() -> None:
    seen = LedgerView(finding_since={("rebalance-proposed", "vm-web01@kvm1"): 9_950.0})
    assert rebalance.plan(_ctx(LOADS, "apply", ledger=seen)).actions == ()  # held 50 s of 90
    seen = LedgerView(finding_since={("rebalance-proposed", "vm-web01@kvm1"): 9_900.0})
    (move,) = rebalance.plan(_ctx(LOADS, "apply", ledger=seen)).actions
    assert isinstance(move, SetLocation)
    assert (move.id, move.rsc, move.node, move.score) == (
        "warden-balance-vm-web01", "vm-web01", "kvm3", "INFINITY")
    # Under way: said, and nothing else proposed while it lasts (one move at a time).
    moving = (LocationConstraint(id="warden-balance-vm-web01", rsc="vm-web01", node="kvm3",
                                 score="INFINITY"),)
    plan = rebalance.plan(_ctx(LOADS, "apply", ledger=seen, moving=moving))
    assert plan.actions == () and [f.kind for f in plan.findings] == ["rebalance-moving"]
    # There: the constraint goes (stickiness keeps it); turned off: it goes too.
    there = {"web01": "kvm3", "web02": "kvm1", "db01": "kvm2"}
    done = rebalance.plan(_ctx({**LOADS, "web01": None}, "apply", where=there, moving=moving))
    assert done.actions == (RemoveConstraint(reconciler="rebalance", id="warden-balance-vm-web01",
                                             rsc="vm-web01", why=done.actions[0].why),)
    off = rebalance.plan(_ctx(LOADS, "off", moving=moving))
    assert [type(a) for a in off.actions] == [RemoveConstraint]
    # Not made by Pacemaker in five minutes (no room there after all): given up.
    asked = LedgerView(balanced_at={"vm-web01": 10_000.0 - 301})
    late = rebalance.plan(_ctx(LOADS, "apply", ledger=asked, moving=moving))
    assert [type(a) for a in late.actions] == [RemoveConstraint]
    assert "given up" in late.actions[0].why
