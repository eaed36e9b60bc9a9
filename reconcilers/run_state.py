"""Run state: `state: running|stopped` -> the resource's `target-role` meta attribute."""

from __future__ import annotations

from controller.model.actions import Plan, SetMeta
from controller.model.context import Context
from reconcilers.base import PlanBuilder, Scope

NAME = "run_state"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index = ctx.index
    for vm in ctx.in_scope():
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
