"""Cluster properties: `cluster.properties` in the file -> crm_config nvpairs."""

from __future__ import annotations

from controller.model.actions import SetProperty
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from reconcilers.base import Plan, PlanBuilder

NAME = "properties"
_BOOL = {"true": "true", "yes": "true", "on": "true", "y": "true", "1": "true",
         "false": "false", "no": "false", "off": "false", "n": "false", "0": "false"}


def same_value(a: str | None, b: str) -> bool:
    """Pacemaker reads `yes`, `on` and `true` alike; only a real difference is drift."""
    if a is None:
        return False
    return a == b or (_BOOL.get(a.lower()) is not None and _BOOL.get(a.lower()) == _BOOL.get(b.lower()))


def plan(index: ClusterIndex, desired: DesiredState) -> Plan:
    out = PlanBuilder(NAME)
    has_fencing = any(
        (cfg.agent or "").startswith("stonith:") for cfg in index.configured.values()
    )
    for name, value in sorted(desired.cluster.properties.items()):
        current = index.properties.get(name)
        if not same_value(current, value):
            if name == "stonith-enabled" and same_value(value, "true") and not has_fencing:
                # Pacemaker refuses to start any resource with STONITH on and no device:
                # enabling it would stop every VM. A person must configure fencing first.
                out.find("critical", "stonith-enabled",
                         "desired stonith-enabled=true, but no stonith resource is configured; "
                         "not enabling it (Pacemaker would stop every resource)")
                continue
            out.actions.append(
                SetProperty(reconciler=NAME, name=name, value=value,
                            why=f"desired {name}={value}, cluster has {current or '(unset)'}")
            )
    return out.build()
