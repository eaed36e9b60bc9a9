"""Paused VMs: a guest frozen by an I/O error, a watchdog or a `virsh suspend` looks healthy to
Pacemaker (VirtualDomain's monitor counts "paused" as running), so nobody raises it -- we do.

A cluster VM (any VirtualDomain resource, listed in the desired file or not) paused for longer
than `policy.pause_grace_seconds` is a critical finding, unless it is paused by a migration
(libvirt pauses a guest at the end of a live migration) while Pacemaker migrates it. With
`policy.on_pause: restart` kvm-warden also marks the resource failed on that node
(`crm_resource --fail`): Pacemaker's own recovery restarts it, counting a failure as for any
other -- only for VMs the file lists (kvm-warden acts on what it governs), and never for pauses
that are a job in progress (save, dump, snapshot), which restarting would break.
"""

from __future__ import annotations

from controller.model.actions import FailResource, Plan, Subject
from controller.model.context import Context
from controller.model.vms import cluster_vms
from reconcilers.base import PlanBuilder, Scope

NAME = "paused"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())
MIGRATION_REASONS = frozenset({"migration", "postcopy", "starting-up"})
JOB_REASONS = frozenset({"save", "dump", "snapshot", "from-snapshot", "shutdown"})


def paused_vms(ctx: Context) -> list[tuple[str, str, str, str, float | None]]:
    """(vm, resource id, node, reason, seconds paused) of the cluster VMs that count as paused:
    every VirtualDomain resource's, listed in the file or not (controller/model/vms.py)."""
    index, only = ctx.index, ctx.scope
    out = []
    for name, rid in sorted(cluster_vms(index, ctx.desired, only).items()):
        for node, dom in sorted(index.listed.get(name, {}).items()):
            if dom.state != "paused":
                continue
            if dom.reason in MIGRATION_REASONS and (rid in index.migrating
                                                    or rid in index.transitioning):
                continue
            age = ctx.now - dom.since if dom.since is not None else None
            out.append((name, rid, node, dom.reason or "unknown", age))
    return out


def due_at(ctx: Context) -> float | None:
    """When the next paused VM's grace ends (the loop wakes then), if one is waiting."""
    grace = ctx.desired.policy.pause_grace_seconds
    waits = [ctx.now + grace - age for *_, age in paused_vms(ctx)
             if age is not None and age < grace]
    return min(waits) if waits else None


def _why_not(ctx: Context, rid: str, node: str, reason: str, age: float,
             declared: set[str]) -> str | None:
    """Why a paused VM is not restarted now (None: restart it)."""
    if ctx.desired.policy.on_pause == "report":
        return "not restarted (on_pause: report)"
    if rid not in declared:
        return "not restarted: the desired file does not list it"
    if reason in JOB_REASONS:
        return f"not restarted: a {reason} job may be in progress"
    # One restart per pause: once marked failed, the recovery is Pacemaker's (a stop of a
    # paused guest may wait out its graceful timeout); another --fail would only count more
    # failures towards migration-threshold. Nor while Pacemaker has an operation in flight.
    asked = ctx.ledger.failed_at.get((rid, node))
    if asked is not None and asked >= ctx.now - age:
        return "marked failed, Pacemaker recovers it"
    if rid in ctx.index.transitioning or rid in ctx.index.migrating:
        return "Pacemaker has an operation in flight on it"
    if node not in ctx.index.running.get(rid, ()):
        return "Pacemaker does not have it running there"
    return None


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    declared = {vm.resource_id for vm in ctx.desired.vms}
    for name, rid, node, reason, age in paused_vms(ctx):
        if age is None or age < ctx.desired.policy.pause_grace_seconds:
            continue
        why_not = _why_not(ctx, rid, node, reason, age, declared)
        out.find("vm-paused", "critical", Subject(rid, node),
                 f"domain {name} is paused on {node} ({reason}) for {age:.0f} s; Pacemaker's "
                 "monitor counts a paused VM as running" + (f"; {why_not}" if why_not else ""))
        if why_not is None:
            out.actions.append(FailResource(
                reconciler=NAME, rsc=rid, node=node,
                why=f"{name} paused on {node} ({reason}) for {age:.0f} s; on_pause: restart"))
    plan = out.build()
    return Plan(plan.actions, plan.findings, due_at(ctx))
