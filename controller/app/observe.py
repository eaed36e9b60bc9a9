"""Renderings of the observed state for people and for other tools.

`observe_document` is a contract (see docs/reference.md, "observe --json"): other tools read it, so its
keys, types and ordering change only compatibly.
"""

from __future__ import annotations

from typing import Any

from controller.model.observed import CibConfig, ClusterStatus


def observe_document(status: ClusterStatus, cib: CibConfig | None) -> dict[str, Any]:
    nodes = [
        {
            "name": n.name,
            "online": n.online,
            "standby": n.standby,
            "maintenance": n.maintenance,
            "unclean": n.unclean,
            "is_dc": n.is_dc,
            "resources_running": n.resources_running,
        }
        for n in sorted(status.nodes.values(), key=lambda n: n.name)
    ]
    resources = [
        {
            "id": r.id,
            "parent": r.parent,
            "agent": r.agent,
            "role": r.role,
            "active": r.active,
            "failed": r.failed,
            "managed": r.managed,
            "nodes": list(r.nodes),
        }
        for r in status.resources
    ]
    failures = [
        {"resource": f.resource, "node": f.node, "task": f.task, "rc": f.rc, "status": f.status}
        for f in status.failures
    ]
    constraints: dict[str, list[dict[str, Any]]] = {"location": [], "order": [], "colocation": []}
    if cib is not None:
        c = cib.constraints
        constraints["location"] = [
            {"id": x.id, "rsc": x.rsc, "node": x.node, "score": x.score, "role": x.role,
             "rule": x.rule}
            for x in c.location
        ]
        constraints["order"] = [
            {"id": x.id, "first": x.first, "then": x.then, "kind": x.kind,
             "symmetrical": x.symmetrical}
            for x in c.order
        ]
        constraints["colocation"] = [
            {"id": x.id, "rsc": x.rsc, "with_rsc": x.with_rsc, "score": x.score}
            for x in c.colocation
        ]
    return {
        "dc": status.dc,
        "with_quorum": status.with_quorum,
        "properties": dict(status.properties),
        "nodes": nodes,
        "resources": resources,
        "failures": failures,
        "constraints": constraints,
    }


def observe_summary(status: ClusterStatus, cib: CibConfig | None) -> str:
    """A short human summary, one line per node and per top-level resource."""
    lines = [
        f"DC: {status.dc or '(none)'}   quorum: {'yes' if status.with_quorum else 'NO'}   "
        + "   ".join(
            f"{k}={status.properties[k]}"
            for k in ("stonith-enabled", "no-quorum-policy", "maintenance-mode")
            if k in status.properties
        )
    ]
    lines.append("Nodes:")
    for n in sorted(status.nodes.values(), key=lambda n: n.name):
        flags = [
            label
            for label, on in (
                ("online" if n.online else "OFFLINE", True),
                ("standby", n.standby),
                ("maintenance", n.maintenance),
                ("UNCLEAN", n.unclean),
                ("pending", n.pending),
                ("DC", n.is_dc),
            )
            if on
        ]
        lines.append(f"  {n.name:<16} {', '.join(flags):<32} {n.resources_running} resources")
    lines.append("Resources:")
    grouped: dict[str, list[str]] = {}
    for r in status.resources:
        key = r.parent or r.id
        where = ",".join(r.nodes) or "-"
        state = r.role + (" FAILED" if r.failed else "") + ("" if r.managed else " (unmanaged)")
        text = f"{state} on {where}" if r.nodes else state
        grouped.setdefault(key, []).append(text if r.parent is None else f"{r.id}: {text}")
    for key, texts in grouped.items():
        lines.append(f"  {key:<24} {'; '.join(texts)}")
    if status.failures:
        lines.append("Failures:")
        for f in status.failures:
            lines.append(f"  {f.resource} {f.task} on {f.node}: rc={f.rc} {f.status}")
    if cib is not None:
        c = cib.constraints
        lines.append(
            f"Constraints: {len(c.location)} location, {len(c.order)} order, "
            f"{len(c.colocation)} colocation"
        )
    return "\n".join(lines)
