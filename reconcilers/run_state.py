"""Run state: `state: running|stopped` -> the resource's `target-role` meta attribute."""

from __future__ import annotations

from controller.model.actions import Plan, SetMeta
from controller.model.context import Context
from reconcilers.base import PlanBuilder

NAME = "run_state"


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired, only = ctx.index, ctx.desired, ctx.scope
    for vm in desired.vms:
        if only is not None and vm.name not in only:
            continue
        rid = vm.resource_id
        cfg = index.configured.get(rid)
        if cfg is None:
            continue  # reported by the inventory reconciler
        current = cfg.meta.get("target-role")
        # Pacemaker's default target-role is Started: absent means running is wanted.
        effective = (current or "Started").lower()
        want = "Started" if vm.state == "running" else "Stopped"
        if vm.state == "running" and effective == "stopped" or (
            vm.state == "stopped" and effective != "stopped"
        ):
            out.actions.append(
                SetMeta(reconciler=NAME, rsc=rid, name="target-role", value=want,
                        why=f"{vm.name} should be {vm.state}; target-role is {current or '(unset)'}")
            )
    return out.build()
