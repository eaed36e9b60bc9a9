"""Cluster properties: `cluster.properties` in the file -> crm_config nvpairs."""

from __future__ import annotations

from controller.model.actions import Plan, SetProperty, Subject
from controller.model.context import Context
from controller.model.pcmk import effective_property, property_names, same_value
from reconcilers.base import PlanBuilder, Scope

NAME = "properties"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired = ctx.index, ctx.desired
    has_fencing = any(
        (cfg.agent or "").startswith("stonith:") for cfg in index.configured.values()
    )
    for name, value in sorted(desired.cluster.properties.items()):
        # Judged on the value Pacemaker uses (3.0.2's name wins over its older alias).
        current = effective_property(index.properties, name)
        if same_value(current, value):
            continue
        old, new = property_names(name)
        if old == "stonith-enabled" and same_value(value, "true") and not has_fencing:
            # Pacemaker refuses to start any resource with STONITH on and no device:
            # enabling it would stop every VM. A person must configure fencing first.
            out.find("stonith-without-device", "critical", Subject(name="stonith-enabled"),
                     f"desired {name}=true, but no stonith resource is configured; "
                     "not enabling it (Pacemaker would stop every resource)")
            continue
        # The older name, which every Pacemaker reads; 3.0.2's too where it is set (it wins).
        for n in (old, *((new,) if new is not None and new in index.properties else ())):
            if not same_value(index.properties.get(n), value):
                out.actions.append(SetProperty(
                    reconciler=NAME, name=n, value=value,
                    why=f"desired {name}={value}, cluster has {current or '(unset)'}"
                        + (f" (its {n} is {index.properties[n]})" if n != name
                           and n in index.properties else "")))
    return out.build()
