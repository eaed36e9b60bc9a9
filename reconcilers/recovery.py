"""Recovery: Pacemaker recovers, kvm-warden only sets its knobs.

`policy.recovery` (or a VM's own `recovery`) becomes the VM resource's `migration-threshold`
and `failure-timeout` meta attributes: after that many failures on a node Pacemaker bans the VM
from the node until the timeout has passed. Health never lifts such a ban early (health.py).
"""

from __future__ import annotations

from controller.model.actions import Plan, SetMeta
from controller.model.context import Context
from controller.model.pcmk import interval_seconds
from reconcilers.base import PlanBuilder, Scope

NAME = "recovery"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired = ctx.index, ctx.desired
    for vm in ctx.in_scope():
        recovery = desired.recovery_of(vm)
        cfg = index.configured.get(vm.resource_id)
        if recovery is None or cfg is None:
            continue
        threshold = str(recovery.migration_threshold)
        have = cfg.meta.get("migration-threshold")
        if have is None or have.strip() != threshold:
            out.actions.append(SetMeta(
                reconciler=NAME, rsc=vm.resource_id, name="migration-threshold", value=threshold,
                why=f"{vm.name}: Pacemaker bans it from a node after {threshold} failures there "
                    f"(migration-threshold is {have or '(unset: 1000000)'})"))
        timeout = recovery.failure_timeout_seconds
        have = cfg.meta.get("failure-timeout")
        if interval_seconds(have) != float(timeout):
            out.actions.append(SetMeta(
                reconciler=NAME, rsc=vm.resource_id, name="failure-timeout", value=f"{timeout}s",
                why=f"{vm.name}: failures expire after {timeout} s "
                    f"(failure-timeout is {have or '(unset: never)'})"))
    return out.build()
