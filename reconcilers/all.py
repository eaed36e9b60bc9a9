"""The fixed list of reconcilers and the one function that runs them all (still pure)."""

from __future__ import annotations

import dataclasses

from controller.model.actions import AnyAction, Plan
from controller.model.context import Context
from controller.model.upgrade import effective, progress
from reconcilers import (
    capacity,
    enroll,
    health,
    inventory,
    machines,
    nodes,
    paused,
    placement,
    properties,
    rebalance,
    recovery,
    run_state,
    storage,
    upgrade,
    versions,
)
from reconcilers.base import Reconciler

# The order matters twice: `plan` prints in it, and when two reconcilers want the same object
# (storage's no-quorum-policy default and an explicit property) the first one wins, so the
# file's explicit words come first.
ALL: tuple[Reconciler, ...] = (
    properties, storage, placement, capacity, nodes, run_state, recovery, health, paused,
    inventory, machines, versions, rebalance)
ORDER = (enroll.NAME, *(r.NAME for r in ALL), upgrade.NAME)


def plan_all(ctx: Context) -> Plan:
    """Every reconciler; with `ctx.scope` (VM names made dirty by events) just those VMs' part
    -- cluster-wide checks, removals and health's cleanups run on the full passes. A resource
    enrollment creates, hands over or removes in this pass is left alone by the others. A
    declared rolling upgrade is enforced as the file's own drain of its current node."""
    up = progress(ctx.desired, ctx.index)
    said = upgrade.plan(ctx, up) if ctx.scope is None or upgrade.SCOPE == "vms" else Plan()
    ctx = dataclasses.replace(ctx, desired=effective(ctx.desired, up))
    first = enroll.plan(ctx)
    busy = enroll.acted_on(first)
    total = Plan()
    for reconciler in (r for r in ALL if runs(r, ctx)):
        p = reconciler.plan(ctx)
        total = total + Plan(tuple(a for a in p.actions if a.resource not in busy),
                             p.findings, p.requeue_at)
    return _dedupe(total + first + said)


def runs(reconciler: Reconciler, ctx: Context) -> bool:
    """Whether this pass runs it: a cluster-wide reconciler on full passes only."""
    return ctx.scope is None or reconciler.SCOPE == "vms"


def _dedupe(plans: Plan) -> Plan:
    seen: set[str] = set()
    actions: list[AnyAction] = []
    for a in plans.actions:
        if a.key not in seen:
            seen.add(a.key)
            actions.append(a)
    return Plan(tuple(actions), plans.findings, plans.requeue_at)
