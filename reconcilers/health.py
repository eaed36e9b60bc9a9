"""Health: clean up failures whose cause has cleared; report what must not be fixed silently.

A failure is cleaned (`crm_resource --cleanup --resource R --node N`) only once Pacemaker has
the resource running again (the cause cleared), the node is online and the failure is older
than an exponential backoff; a resource cleaned too often in a window opens a circuit breaker
(a critical finding, no more cleanups) because repeated failures need a person -- whose
cleanup is `clean_failures_before` in the file (the web view's "clean up"): the failures up to
that instant, cleaned once, failed VM or not, backoff and breaker aside. A domain that
libvirt reports running where Pacemaker does not place it, or on two nodes, is a possible split
brain: a critical finding, never an automatic action. So is a domain last seen running on a node
Pacemaker sees unclean (partitioned, fencing pending or failed) or offline while its agent still
reports it: that is where split brain happens, so those listings are never ignored here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from controller.model.actions import Cleanup, Plan, Subject
from controller.model.context import CIRCUIT_WINDOW, Context
from controller.model.desired import DesiredState, Vm
from controller.model.index import ClusterIndex
from controller.model.pcmk import interval_seconds, ocf_rc
from controller.model.vms import cluster_vms
from reconcilers.base import PlanBuilder, Scope

NAME = "health"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())
BACKOFF_BASE = 15.0  # seconds before the first cleanup after a failure; doubles per attempt
BACKOFF_CAP = 900.0
CIRCUIT_MAX = 5  # cleanups of one resource on one node within CIRCUIT_WINDOW open the circuit


def backoff(attempts: int) -> float:
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempts - 1)))


def parse_pacemaker_time(text: str | None) -> float | None:
    """crm_mon prints `2026-11-24 19:25:01Z` in failures and `Tue Nov 24 19:25:01 2026` in
    node_history (local time of the machine that ran crm_mon)."""
    if not text:
        return None
    for fmt, utc in (("%Y-%m-%d %H:%M:%SZ", True), ("%a %b %d %H:%M:%S %Y", False)):
        try:
            dt = datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return (dt.replace(tzinfo=UTC) if utc else dt.astimezone()).timestamp()
    return None


INFINITY_THRESHOLD = 1_000_000  # Pacemaker's default migration-threshold (INFINITY): no ban


def counted_by_pacemaker(index: ClusterIndex, rid: str, node: str, now: float) -> bool:
    """Whether Pacemaker's own recovery owns this fail-count: with a finite migration-threshold
    every failure counts towards banning `rid` from `node` (and at the threshold it *is* the
    ban), so only its failure-timeout may expire it. A cleanup before that would let a VM that
    keeps failing flap back to the node forever. Without a failure-timeout it never expires by
    itself: clearing it is the operator's `pcs resource cleanup`."""
    cfg = index.configured.get(rid)
    meta = cfg.meta if cfg is not None else {}
    threshold = index.migration_thresholds.get((rid, node))
    if threshold is None:
        text = meta.get("migration-threshold")
        threshold = int(text) if text is not None and text.strip().isdigit() else None
    if not threshold or threshold >= INFINITY_THRESHOLD:
        return False
    timeout = interval_seconds(meta.get("failure-timeout"))
    failed_at = parse_pacemaker_time(index.last_failure.get((rid, node)))
    return not timeout or failed_at is None or now - failed_at < timeout


def migration_sources(index: ClusterIndex, rid: str, node: str) -> tuple[str, ...] | None:
    """The nodes whose history of `rid` must be refreshed before `node`'s is cleaned, or None
    when no cleanup is safe.

    Erasing a migration target's `migrate_from` while a source still records its `migrate_to`
    makes Pacemaker 2.1 restart the running VM ("can no longer migrate"). Without a
    migrate_from on `node` nothing is at stake. With one, every other node holding a migrate_to
    (crm_mon's history, fresh each full pass; the cached CIB may be a configuration change
    behind) is refreshed first -- safe only where that erases no migrate_from of its own, no
    fail-count Pacemaker keeps, and not where the VM runs."""
    if "migrate_from" not in index.history_tasks.get((rid, node), ()):
        return ()
    sources = (set(index.migrated_from.get((rid, node), ()))
               | set(index.migrate_to_nodes.get(rid, ()))) - {node}
    for s in sources:
        if "migrate_from" in index.history_tasks.get((rid, s), ()) \
                or index.fail_counts.get((rid, s), 0) > 0 or s in index.running.get(rid, ()):
            return None
    return tuple(sorted(sources))


def _watched(index: ClusterIndex, desired: DesiredState) -> tuple[set[str], set[str]]:
    """(resource ids whose failures health cleans up, ids of clone members among them)."""
    ids = {vm.resource_id for vm in desired.vms}
    for st in desired.storage:
        ids.update((st.resource, *st.requires))
    members = {rid for rid, cfg in index.configured.items() if cfg.parent in ids}
    return ids | members, members


def plan(ctx: Context) -> Plan:
    """`ctx.scope`: VMs dirtied by events; cleanups then wait for a full pass (they need crm_mon's
    fail-counts), placement findings are checked for those VMs."""
    out = PlanBuilder(NAME)
    asked = _asked(ctx, out)  # the operator's cleanups, whatever the policy says
    if ctx.scope is None and ctx.desired.policy.clean_failures:
        _cleanups(ctx, out, asked)
    _failed_vms(ctx, out)
    if ctx.index.observed.domains:
        for vm in ctx.in_scope():
            _where_it_runs(ctx, out, vm)
    return out.build()


def _cleanups(ctx: Context, out: PlanBuilder, asked: set[tuple[str, str]]) -> None:
    """Failures whose cause has cleared, cleaned up with a backoff and a circuit breaker
    (not those the operator asked for: `asked`)."""
    index, now = ctx.index, ctx.now
    watched, members = _watched(index, ctx.desired)
    for (rid, node), count in sorted(index.fail_counts.items()):
        if (rid, node) in asked or rid not in watched or count <= 0:
            continue
        n = index.nodes.get(node)
        running = index.running.get(rid, ())
        cleared = (node in running) if rid in members else bool(running)
        if n is None or not n.online or not cleared or rid in index.failed or rid in index.migrating:
            continue
        if counted_by_pacemaker(index, rid, node, now):
            continue  # Pacemaker's own recovery: failure-timeout expires it, not a cleanup
        attempts = tuple(t for t in ctx.ledger.cleanups.of(rid, node) if now - t < CIRCUIT_WINDOW)
        if len(attempts) >= CIRCUIT_MAX:
            out.find("circuit-open", "critical", Subject(rid, node),
                     f"circuit open: {rid} failed again after {len(attempts)} cleanups on {node} "
                     f"within {CIRCUIT_WINDOW / 60:.0f} min; no more automatic cleanups")
            continue
        failed_at = parse_pacemaker_time(index.last_failure.get((rid, node)))
        since = max([t for t in (failed_at, attempts[-1] if attempts else None) if t is not None],
                    default=None)
        if since is not None and now - since < backoff(len(attempts) + 1):
            continue
        out.actions.append(_cleanup(
            index, rid, node, f"fail-count {count} on {node}, and {rid} runs again on "
                              f"{', '.join(running)}; cleanup #{len(attempts) + 1}"))


def _where_it_runs(ctx: Context, out: PlanBuilder, vm: Vm) -> None:
    """A VM's domain where Pacemaker does not have it: on an unfenced node, twice, changed
    behind the cluster's back, or running where its resource is not active."""
    index, rid = ctx.index, vm.resource_id
    for node in index.unfenced.get(vm.name, ()):
        st = index.nodes.get(node)
        how = "UNCLEAN (fencing pending or failed)" if st is not None and st.unclean \
            else "offline"
        out.find("split-brain", "critical", Subject(rid, node),
                 f"split brain: domain {vm.name} was last seen running on {node}, which "
                 f"Pacemaker sees {how}; nothing proves it stopped there",
                 urgent=st is not None and st.unclean,
                 reason="NodeUnclean" if st is not None and st.unclean else "NodeOffline")
    for c in ctx.ledger.out_of_band:
        if c.vm == vm.name:
            out.find("out-of-band", "warning", Subject(rid, c.node),
                     f"{vm.name}: {c.what} on {c.node} at "
                     f"{datetime.fromtimestamp(c.at, UTC):%H:%M:%S}Z was not Pacemaker's "
                     "doing (virsh behind the cluster's back?)")
    on = index.domains_running.get(vm.name, ())
    if not on or rid in index.migrating or rid in index.transitioning:
        return
    placed = set(index.running.get(rid, ()))
    if len(on) > 1:
        out.find("split-brain", "critical", Subject(rid),
                 f"split brain? domain {vm.name} runs on {', '.join(on)}", reason="RunsTwice")
    elif set(on) - placed:
        out.find("unplaced-domain", "critical", Subject(rid),
                 f"domain {vm.name} runs on {on[0]} where Pacemaker does not have {rid} "
                 f"active ({', '.join(sorted(placed)) or 'nowhere'})")


def _asked(ctx: Context, out: PlanBuilder) -> set[tuple[str, str]]:
    """The operator's cleanups (`clean_failures_before`): each failure of the VM up to that
    instant, on an online node, cleaned once -- failed or not, backoff and circuit breaker
    aside: a person has looked. Only the migration history's order of erasing still holds
    (migration_sources). Returns the (resource, node) pairs this decides."""
    index, now = ctx.index, ctx.now
    decided: set[tuple[str, str]] = set()
    if ctx.scope is not None:
        return decided
    for vm in ctx.desired.vms:
        if vm.clean_failures_before is None:
            continue
        before = vm.clean_failures_before.timestamp()
        rid = vm.resource_id
        if before > now + 60:  # a clock ahead, a typo: every failure until then, cleaned
            out.find("cleanup-in-future", "warning", Subject(rid),
                     f"{vm.name}: clean_failures_before "
                     f"{vm.clean_failures_before:%Y-%m-%d %H:%M:%S%z} is in the future; nothing "
                     "is cleaned until it is a time that has passed")
            continue
        for (r, node), count in sorted(index.fail_counts.items()):
            failed_at = parse_pacemaker_time(index.last_failure.get((r, node)))
            if r != rid or count <= 0 or (failed_at is not None and failed_at > before):
                continue
            decided.add((r, node))
            n = index.nodes.get(node)
            if n is None or not n.online or rid in index.migrating:
                continue
            out.actions.append(_cleanup(
                index, rid, node, f"the file asks {vm.name}'s failures up to "
                f"{vm.clean_failures_before:%Y-%m-%d %H:%M:%S%z} cleaned (fail-count {count} "
                f"on {node})"))
    return decided


def _cleanup(index: ClusterIndex, rid: str, node: str, why: str) -> Cleanup:
    """A cleanup in the order the migration history allows (a fail-count reset alone when no
    order of erasing it is safe)."""
    sources = migration_sources(index, rid, node)
    return Cleanup(reconciler=NAME, rsc=rid, node=node, sources=sources or (),
                   reset_only=sources is None, why=why)


def _failed_vms(ctx: Context, out: PlanBuilder) -> None:
    """Every cluster VM Pacemaker flags FAILED, listed in the file or not: its role may still
    say Started (a failed monitor), so only this finding says it is not fine."""
    index = ctx.index
    wanted = {vm.resource_id: vm for vm in ctx.desired.vms}
    for name, rid in sorted(cluster_vms(index, ctx.desired, ctx.scope).items()):
        if rid not in index.failed:
            _cannot_start(out, index, name, rid, wanted.get(rid))
            continue
        inst = index.observed.status.instances(rid)
        where = sorted({n for r in inst if r.failed for n in r.nodes})
        why = "; ".join(f"{f.task or 'operation'} on {f.node}: {ocf_rc(f.rc)}"
                        for f in index.observed.status.failures if f.resource == rid)
        out.find("vm-failed", "critical", Subject(rid, where[0] if len(where) == 1 else None),
                 f"{name}: Pacemaker has {rid} FAILED on {', '.join(where) or 'no node'}"
                 + (f" ({why})" if why else "") + "; it recovers it by its policy "
                 "(migration-threshold, on-fail), or clean it up once the cause is fixed "
                 "(the web view's clean up: clean_failures_before in the file)",
                 urgent=True, reason="Failed")


def _cannot_start(out: PlanBuilder, index: ClusterIndex, name: str, rid: str,
                  vm: Vm | None) -> None:
    """A VM that should run, runs nowhere, and whose starts failed: Pacemaker flags it no
    longer (it is Stopped, the failed starts ban it from those nodes) but it is not fine."""
    cfg = index.configured.get(rid)
    role = (cfg.meta.get("target-role") if cfg is not None else None) or "Started"
    if (vm is not None and vm.wants_stopped) or role.lower() == "stopped" \
            or index.running.get(rid) or rid in index.transitioning:
        return
    starts = [f for f in index.observed.status.failures if f.resource == rid
              and f.task == "start"]
    if not starts:
        return
    why = "; ".join(f"start on {f.node}: {ocf_rc(f.rc)}" + (f" ({f.exitreason})"
                    if f.exitreason else "") for f in starts)
    out.find("vm-failed", "critical", Subject(rid),
             f"{name}: {rid} cannot start, it runs nowhere ({why}); Pacemaker does not try "
             "those nodes again until the failures expire (failure-timeout) or are cleaned up "
             "once the cause is fixed (the web view's clean up: clean_failures_before in the "
             "file)", urgent=True, reason="CannotStart")
