"""Cluster properties: `cluster.properties` in the file -> crm_config nvpairs."""

from __future__ import annotations

from controller.model.actions import Plan, SetProperty, Subject
from controller.model.context import Context
from controller.model.pcmk import same_value
from reconcilers.base import PlanBuilder

NAME = "properties"


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    if ctx.scope is not None:  # cluster-wide: full passes only
        return out.build()
    index, desired = ctx.index, ctx.desired
    has_fencing = any(
        (cfg.agent or "").startswith("stonith:") for cfg in index.configured.values()
    )
    for name, value in sorted(desired.cluster.properties.items()):
        current = index.properties.get(name)
        if not same_value(current, value):
            if name == "stonith-enabled" and same_value(value, "true") and not has_fencing:
                # Pacemaker refuses to start any resource with STONITH on and no device:
                # enabling it would stop every VM. A person must configure fencing first.
                out.find("stonith-without-device", "critical", Subject(name="stonith-enabled"),
                         "desired stonith-enabled=true, but no stonith resource is configured; "
                         "not enabling it (Pacemaker would stop every resource)")
                continue
            out.actions.append(
                SetProperty(reconciler=NAME, name=name, value=value,
                            why=f"desired {name}={value}, cluster has {current or '(unset)'}")
            )
    return out.build()
