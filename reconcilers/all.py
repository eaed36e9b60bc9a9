"""The fixed list of reconcilers and the one function that runs them all (still pure)."""

from __future__ import annotations

from controller.model.actions import AnyAction
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from reconcilers import health, inventory, placement, properties, run_state, storage
from reconcilers.base import Plan
from reconcilers.health import CleanupHistory

ORDER = (properties.NAME, storage.NAME, placement.NAME, run_state.NAME, health.NAME, inventory.NAME)


def plan_all(
    index: ClusterIndex, desired: DesiredState, history: CleanupHistory | None = None,
    now: float = 0.0, only: frozenset[str] | None = None,
) -> Plan:
    """Every reconciler; with `only` (VM names made dirty by events) just those VMs' part --
    cluster-wide checks, removals and health run on the full passes (resync, crm_mon)."""
    if only is not None:
        return _dedupe(storage.plan(index, desired, only) + placement.plan(index, desired, only)
                       + run_state.plan(index, desired, only)
                       + health.plan(index, desired, history or CleanupHistory(), now, only))
    return _dedupe(
        properties.plan(index, desired)
        + storage.plan(index, desired)
        + placement.plan(index, desired)
        + run_state.plan(index, desired)
        + health.plan(index, desired, history or CleanupHistory(), now)
        + inventory.plan(index, desired)
    )


def _dedupe(plans: Plan) -> Plan:
    # Two reconcilers may want the same object (storage's no-quorum-policy default and an explicit
    # property): the first in ORDER wins, so the file's explicit words come first.
    seen: set[str] = set()
    actions: list[AnyAction] = []
    for a in plans.actions:
        if a.key not in seen:
            seen.add(a.key)
            actions.append(a)
    return Plan(tuple(actions), plans.findings)
