"""Pure planners over many generated cases: never raise, and applying twice equals once.

Observed states are generated as CIB configurations (parsed by the real parser) plus a status
model; "applying" a plan uses the actuator's own CIB edits on the XML, re-parsed, so the
property covers planner, edit and parser together without any external process.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from controller.actuators.cibedit import CibEditor
from controller.model.actions import RemoveConstraint
from controller.model.context import Context
from controller.model.desired import DesiredState, parse_desired
from controller.model.errors import DesiredStateError
from controller.model.index import build_index
from controller.model.observed import ClusterStatus, Node, ObservedState, Resource
from controller.model.vms import cluster_vms
from probes.pacemaker.cib import parse_cib
from reconcilers.all import ALL, plan_all, runs
from tests.cibs import STORAGE_CHAIN, cib, vm
from tests.unit import clusters

NODES = ("kvm1", "kvm2", "kvm3", "kvm4")
VMS = tuple(f"v{i}" for i in range(6))

node_lists = st.lists(st.sampled_from(NODES), min_size=1, max_size=3, unique=True)


@st.composite
def desired_states(draw: Any) -> DesiredState:
    vms = draw(st.lists(st.sampled_from(VMS), min_size=0, max_size=6, unique=True))
    lines = ["version: 1", "storage:", "  - {name: gfs, resource: gfs2_res01-clone, "
             "mountpoint: /kvm/storage, requires: [clvmd-clone, dlm-clone]}", "vms:" if vms else ""]
    for name in vms:
        lines.append(f"  - name: {name}")
        lines.append(f"    state: {draw(st.sampled_from(['running', 'stopped']))}")
        allowed = draw(st.none() | node_lists)
        prefer = draw(st.none() | st.sampled_from(allowed or NODES))
        placement = {}
        if allowed:
            placement["allowed"] = "[" + ", ".join(allowed) + "]"
        if prefer:
            placement["prefer"] = prefer
        if placement:
            lines.append("    placement: {" + ", ".join(f"{k}: {v}" for k, v in placement.items())
                         + "}")
        anti = draw(st.lists(st.sampled_from([v for v in vms if v != name] or [name]),
                             max_size=2, unique=True))
        anti = [a for a in anti if a != name]
        if anti:
            lines.append(f"    anti_affinity: [{', '.join(anti)}]")
        if draw(st.booleans()):
            lines.append("    storage: [gfs]")
    lines.append(f"policy: {{prefer_score: {draw(st.integers(-1000, 5000))}, "
                 f"clear_move_leftovers: {str(draw(st.booleans())).lower()}}}")
    try:
        return parse_desired("\n".join(lines) + "\n")
    except DesiredStateError:
        assume(False)
        raise


@st.composite
def observed_states(draw: Any) -> tuple[bytes, ClusterStatus]:
    present = draw(st.lists(st.sampled_from(VMS), unique=True))
    resources = STORAGE_CHAIN + "".join(
        vm(f"vm-{v}", config=draw(st.sampled_from([f"/kvm/storage/{v}.xml", f"/etc/{v}.xml"])))
        for v in present)
    cons = []
    for i, v in enumerate(present):
        if draw(st.booleans()):
            cons.append(f'<rsc_location id="warden-prefer-vm-{v}" rsc="vm-{v}" node='
                        f'"{draw(st.sampled_from(NODES))}" score="{draw(st.integers(0, 100))}"/>')
        if draw(st.booleans()):
            cons.append(f'<rsc_location id="cli-ban-vm-{v}-on-kvm1" rsc="vm-{v}" node="kvm1" '
                        'score="-INFINITY"/>')
        if draw(st.booleans()):
            cons.append(f'<rsc_order id="pcs-order-{i}" first="gfs2_res01-clone" then="vm-{v}"/>')
        if draw(st.booleans()):
            cons.append(f'<rsc_colocation id="warden-anti-vm-{v}-vm-zz" rsc="vm-{v}" '
                        'with-rsc="vm-zz" score="-INFINITY"/>')
    xml = cib(resources, "".join(cons), nodes=NODES)
    running = []
    for v in present:
        on = draw(st.lists(st.sampled_from(NODES), max_size=2, unique=True))
        running.append(Resource(id=f"vm-{v}", agent="ocf:heartbeat:VirtualDomain",
                                role="Started" if on else "Stopped", active=bool(on),
                                nodes=tuple(sorted(on))))
    status = ClusterStatus(
        dc="kvm1", with_quorum=True,
        nodes={n: Node(name=n, online=draw(st.booleans())) for n in NODES},
        resources=tuple(running),
    )
    return xml.encode(), status


def observe(xml: bytes, status: ClusterStatus) -> ObservedState:
    return ObservedState(status=status, cib=parse_cib(xml))


def apply(xml: bytes, actions: Any) -> bytes:
    root = etree.fromstring(xml)
    editor = CibEditor(root)
    for a in actions:
        editor.apply(a)
    return etree.tostring(root)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desired=desired_states(), observed=observed_states())
def test_planning_never_raises_and_applying_twice_equals_applying_once(
    desired: DesiredState, observed: tuple[bytes, ClusterStatus]
) -> None:
    xml, status = observed
    first = plan_all(Context(index=build_index(observe(xml, status)), desired=desired))
    keys = [a.key for a in first.actions]
    assert len(keys) == len(set(keys)), "one action per object"
    once = apply(xml, first.actions)
    second = plan_all(Context(index=build_index(observe(once, status)), desired=desired))
    # After applying, only leftover removals that depend on where VMs run may remain; those
    # target constraints the first plan already removed, so nothing is left at all.
    assert second.actions == (), second.actions
    # Every planned action is a real change: a plan never proposes what already holds.
    if first.actions:
        assert once != xml, "a non-empty plan changed nothing"
    # Foreign constraints are never removed, except the cli-* leftovers.
    for a in first.actions:
        if isinstance(a, RemoveConstraint):
            assert a.id.startswith(("warden-", "cli-prefer-", "cli-ban-"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desired=desired_states(), observed=observed_states())
def test_an_incremental_plan_for_one_vm_is_part_of_the_full_plan(
    desired: DesiredState, observed: tuple[bytes, ClusterStatus]
) -> None:
    xml, status = observed
    index = build_index(observe(xml, status))
    full = set(plan_all(Context(index=index, desired=desired)).actions)
    for one in desired.vms:
        scoped = plan_all(Context(index=index, desired=desired,
                                   scope=frozenset({one.name}))).actions
        assert set(scoped) <= full
        assert all(not isinstance(a, RemoveConstraint) for a in scoped)


def _touches(action: Any) -> set[str]:
    """Every resource an action names (a pair's constraint names two)."""
    names = {action.resource}
    for field in ("rsc", "with_rsc", "first", "then"):
        names.add(getattr(action, field, None))
    return {n for n in names if n is not None}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desired=desired_states(), observed=observed_states())
def test_an_incremental_pass_plans_nothing_outside_its_scope(
    desired: DesiredState, observed: tuple[bytes, ClusterStatus]
) -> None:
    """Every reconciler the engine runs on an incremental pass plans and finds only about the
    dirty VMs (an anti-affinity pair's constraint names the other VM too)."""
    xml, status = observed
    index = build_index(observe(xml, status))
    for one in desired.vms:
        scope = frozenset({one.name})
        mine = set(cluster_vms(index, desired, scope).values())
        scoped = plan_all(Context(index=index, desired=desired, scope=scope))
        for a in scoped.actions:
            assert _touches(a) & mine, (one.name, a)
        for f in scoped.findings:
            assert f.rsc in mine, (one.name, f)


def test_every_reconciler_declares_its_scope_and_the_engine_keeps_to_it() -> None:
    index = clusters.index({"web01": "kvm1"})
    ctx = Context(index=index, desired=parse_desired("version: 1\n"),
                  scope=frozenset({"web01"}))
    for r in ALL:
        assert r.SCOPE in ("vms", "cluster"), r.NAME
        assert runs(r, ctx) == (r.SCOPE == "vms"), r.NAME
        assert runs(r, Context(index=index, desired=ctx.desired)), r.NAME
    assert {r.NAME for r in ALL if r.SCOPE == "cluster"} == {
        "properties", "capacity", "nodes", "inventory", "machines", "versions", "rebalance"}
