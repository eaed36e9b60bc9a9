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
        if vm.state == "absent" and vm.keep_running:
            continue  # enroll.py holds it where it runs and takes it out
        want = "Stopped" if vm.wants_stopped else "Started"
        if want.lower() != effective:
            words = "stopped (state: absent)" if vm.state == "absent" else vm.state
            out.actions.append(
                SetMeta(reconciler=NAME, rsc=rid, name="target-role", value=want,
                        why=f"{vm.name} should be {words}; target-role is {current or '(unset)'}")
            )
    return out.build()
