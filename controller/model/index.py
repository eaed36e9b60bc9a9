"""ClusterIndex: the observed state indexed once per pass, for planners that must stay fast.

At 32 nodes x 5,000 VMs a planner that scans the resource or constraint lists per VM is
quadratic; every lookup a reconciler needs is a dict or set here, built in one linear pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.model.observed import (
    ColocationConstraint,
    Domain,
    LocationConstraint,
    Node,
    ObservedState,
    OrderConstraint,
    ResourceConfig,
    domain_active,
)
from controller.model.pcmk import to_bool

INFINITY = ("INFINITY", "+INFINITY")


@dataclass(frozen=True)
class ClusterIndex:
    observed: ObservedState
    nodes: Mapping[str, Node]
    node_names: frozenset[str]
    configured: Mapping[str, ResourceConfig]
    exists: frozenset[str]
    running: Mapping[str, tuple[str, ...]]  # resource id (primitive or collective) -> nodes
    failed: frozenset[str]
    migrating: frozenset[str]
    transitioning: frozenset[str]  # an operation in flight: Starting, Stopping, Migrating...
    unmanaged: frozenset[str]
    properties: Mapping[str, str]  # explicitly set in the CIB (crm_mon's defaults when no CIB)
    location: Mapping[str, LocationConstraint]
    order: Mapping[str, OrderConstraint]
    colocation: Mapping[str, ColocationConstraint]
    order_pairs: frozenset[tuple[str, str]]
    colocation_pairs: frozenset[tuple[str, str]]
    fail_counts: Mapping[tuple[str, str], int]
    last_failure: Mapping[tuple[str, str], str]
    # (resource, node) -> migration-threshold in force, as crm_mon's node_history reports it
    migration_thresholds: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (resource, target node) -> source nodes whose history holds that migrate_to (from the
    # CIB: read only when the configuration changed, so it may be behind)
    migrated_from: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # resource -> nodes whose operation history holds a migrate_to (crm_mon: every full pass)
    migrate_to_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (resource, node) -> the operations its history on that node holds (crm_mon node_history)
    history_tasks: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    domains_running: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # domain -> nodes
    domain_disks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # domain -> sources
    # domain -> node -> Domain, from fresh listings only (live agent, node online in Pacemaker)
    listed: Mapping[str, Mapping[str, Domain]] = field(default_factory=dict)
    # domain -> nodes where it may be running *outside* Pacemaker's sight: a fresh listing from a
    # node Pacemaker sees offline, or the last listing (even from a silent agent) of a node
    # Pacemaker sees unclean -- where a partitioned or unfenced node keeps running guests.
    unfenced: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _is_infinity(score: str | None) -> bool:
    return score is not None and score.strip().upper() in INFINITY


def build_index(observed: ObservedState) -> ClusterIndex:
    """The whole index, one linear read per source: resources, constraints, the operation
    history, the agents' domain listings."""
    status, cib = observed.status, observed.cib
    configured: dict[str, ResourceConfig] = dict(cib.resources) if cib else {}
    res = _resources(observed, configured)
    cons = _constraints(observed)
    hist = _history(observed)
    doms = _domains(observed)
    node_names = set(status.nodes) | (set(cib.nodes) if cib else set())
    exists = set(configured) | {r.id for r in status.resources} | set(status.collectives)
    return ClusterIndex(
        observed=observed, nodes=status.nodes, node_names=frozenset(node_names),
        configured=configured, exists=frozenset(exists),
        running=res.running, failed=res.failed, migrating=res.migrating,
        transitioning=res.transitioning, unmanaged=res.unmanaged,
        properties=dict(cib.properties) if cib else dict(status.properties),
        location=cons.location, order=cons.order, colocation=cons.colocation,
        order_pairs=cons.order_pairs, colocation_pairs=cons.colocation_pairs,
        fail_counts=hist.fail_counts, last_failure=hist.last_failure,
        migration_thresholds=hist.thresholds, migrate_to_nodes=hist.migrate_to_nodes,
        history_tasks=hist.tasks,
        migrated_from=_migrated_from(cib.migrations if cib else ()),
        domains_running=doms.running, domain_disks=doms.disks, listed=doms.listed,
        unfenced=doms.unfenced,
    )


@dataclass(frozen=True)
class _Resources:
    running: Mapping[str, tuple[str, ...]]
    failed: frozenset[str]
    migrating: frozenset[str]
    transitioning: frozenset[str]
    unmanaged: frozenset[str]


def _resources(observed: ObservedState, configured: Mapping[str, ResourceConfig]
               ) -> _Resources:
    status = observed.status
    running: dict[str, list[str]] = {}
    failed: set[str] = set()
    migrating: set[str] = set()
    transitioning: set[str] = set()
    unmanaged: set[str] = set()
    for r in status.resources:
        ids = [r.id]
        parent = r.parent
        while parent is not None:  # a clone/group is running wherever its members run
            ids.append(parent)
            coll = status.collectives.get(parent)
            parent = coll.parent if coll else None
        if r.active and r.nodes:
            for rid in ids:
                running.setdefault(rid, []).extend(r.nodes)
        if r.failed:
            failed.add(r.id)
        if r.pending or r.role not in ("Started", "Stopped", "Promoted", "Unpromoted", "Master",
                                       "Slave"):
            transitioning.add(r.id)
        if not r.managed:
            unmanaged.add(r.id)
        # crm_mon shows a pending migrate_to/from as role "Migrating"; a primitive active on two
        # nodes outside a clone is a migration half done (migrate_from ran, stop not yet).
        if r.migrating or (r.parent is None and len(r.nodes) > 1):
            migrating.add(r.id)
    unmanaged.update(cid for cid, coll in status.collectives.items() if not coll.managed)
    unmanaged.update(rid for rid, cfg in configured.items()
                     if not to_bool(cfg.meta.get("is-managed"), default=True)
                     or to_bool(cfg.meta.get("maintenance")))
    return _Resources(running={k: tuple(sorted(set(v))) for k, v in running.items()},
                      failed=frozenset(failed), migrating=frozenset(migrating),
                      transitioning=frozenset(transitioning), unmanaged=frozenset(unmanaged))


@dataclass(frozen=True)
class _Constraints:
    location: Mapping[str, LocationConstraint]
    order: Mapping[str, OrderConstraint]
    colocation: Mapping[str, ColocationConstraint]
    order_pairs: frozenset[tuple[str, str]]
    colocation_pairs: frozenset[tuple[str, str]]


def _constraints(observed: ObservedState) -> _Constraints:
    constraints = observed.cib.constraints if observed.cib else None
    location = {c.id: c for c in constraints.location} if constraints else {}
    order = {c.id: c for c in constraints.order} if constraints else {}
    colocation = {c.id: c for c in constraints.colocation} if constraints else {}
    order_pairs = frozenset(
        (c.first, c.then)
        for c in order.values()
        # An asymmetric order (symmetrical=false) does not stop the VM before the storage:
        # for storage safety it is not the order kvm-warden wants.
        if c.first and c.then and (c.kind in (None, "Mandatory")) and c.symmetrical is not False
        and c.first_action in (None, "start") and c.then_action in (None, "start")
    )
    colocation_pairs = frozenset(
        (c.rsc, c.with_rsc)
        for c in colocation.values()
        if c.rsc and c.with_rsc and _is_infinity(c.score) and c.rsc_role in (None, "Started")
        and c.with_rsc_role in (None, "Started")
    )
    return _Constraints(location, order, colocation, order_pairs, colocation_pairs)


@dataclass(frozen=True)
class _History:
    fail_counts: Mapping[tuple[str, str], int]
    last_failure: Mapping[tuple[str, str], str]
    thresholds: Mapping[tuple[str, str], int]
    migrate_to_nodes: Mapping[str, tuple[str, ...]]
    tasks: Mapping[tuple[str, str], tuple[str, ...]]


def _history(observed: ObservedState) -> _History:
    status = observed.status
    fail_counts: dict[tuple[str, str], int] = {}
    last_failure: dict[tuple[str, str], str] = {}
    thresholds: dict[tuple[str, str], int] = {}
    migrate_to_nodes: dict[str, set[str]] = {}
    tasks: dict[tuple[str, str], tuple[str, ...]] = {}
    for h in status.history:
        rid = h.resource.split(":", 1)[0]  # unique clone instances are "rsc:N"
        tasks[(rid, h.node)] = h.tasks
        if "migrate_to" in h.tasks:
            migrate_to_nodes.setdefault(rid, set()).add(h.node)
        if h.migration_threshold is not None:
            thresholds[(rid, h.node)] = h.migration_threshold
        if h.fail_count:
            fail_counts[(rid, h.node)] = max(h.fail_count, fail_counts.get((rid, h.node), 0))
            if h.last_failure:
                last_failure[(rid, h.node)] = h.last_failure
    for f in status.failures:
        rid = f.resource.split(":", 1)[0]
        if (rid, f.node) not in tasks:
            # Only where crm_mon gives no history: there, its fail-count is the count (a reset
            # fail-count leaves the failed action listed until a cleanup or failure-timeout).
            fail_counts.setdefault((rid, f.node), 1)
        if f.last_rc_change:
            last_failure.setdefault((rid, f.node), f.last_rc_change)
    return _History(fail_counts, last_failure, thresholds,
                    {k: tuple(sorted(v)) for k, v in migrate_to_nodes.items()}, tasks)


@dataclass(frozen=True)
class _Domains:
    running: Mapping[str, tuple[str, ...]]
    disks: Mapping[str, tuple[str, ...]]
    listed: Mapping[str, Mapping[str, Domain]]
    unfenced: Mapping[str, tuple[str, ...]]


def _domains(observed: ObservedState) -> _Domains:
    status = observed.status
    running: dict[str, list[str]] = {}
    disks: dict[str, set[str]] = {}
    listed: dict[str, dict[str, Domain]] = {}
    # A listing from a node Pacemaker sees offline, or from an agent gone silent, is history:
    # trusting it would report a VM that Pacemaker recovered elsewhere as running twice.
    online = {n for n, st in status.nodes.items() if st.online}
    unclean = {n for n, st in status.nodes.items() if st.unclean}
    unfenced: dict[str, list[str]] = {}
    for node, doms in observed.domains.items():
        fresh = node not in observed.stale
        if status.nodes and (node in unclean or (node not in online and fresh)):
            # Never "history" for the split-brain check: nothing proves these guests stopped
            # (a clean offline node was fenced or shut down by Pacemaker; its old list is void).
            for name, dom in doms.items():
                if domain_active(dom):
                    unfenced.setdefault(name, []).append(node)
        if (status.nodes and node not in online) or not fresh:
            continue
        for name, dom in doms.items():
            listed.setdefault(name, {})[node] = dom
            if domain_active(dom):
                running.setdefault(name, []).append(node)
            if dom.disks:
                disks.setdefault(name, set()).update(dom.disks)
    return _Domains(running={k: tuple(sorted(v)) for k, v in running.items()},
                    disks={k: tuple(sorted(v)) for k, v in disks.items()}, listed=listed,
                    unfenced={k: tuple(sorted(v)) for k, v in unfenced.items()})


def _migrated_from(migrations: tuple[tuple[str, str, str], ...]
                   ) -> dict[tuple[str, str], tuple[str, ...]]:
    out: dict[tuple[str, str], list[str]] = {}
    for rid, src, dst in migrations:
        if src != dst:
            out.setdefault((rid, dst), []).append(src)
    return {k: tuple(sorted(v)) for k, v in out.items()}

