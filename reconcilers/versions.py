"""Versions: while the cluster runs mixed Pacemaker versions (a rolling upgrade, node by
node), say so and what is safe. Findings only.

Pacemaker supports a rolling upgrade from 2.0 on: the DC stays on the oldest version (the
lowest feature set wins the election); once only new nodes are left, an old node that drops
out cannot rejoin until upgraded; the CIB schema is upgraded (`cibadmin --upgrade`) only when
every node runs the new version. A VM started on a newer QEMU cannot live-migrate back
(reconcilers/machines.py).
"""

from __future__ import annotations

from controller.model.actions import Plan, Subject
from controller.model.context import Context
from reconcilers.base import PlanBuilder, Scope

NAME = "versions"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    status = ctx.index.observed.status
    if not status.mixed_version:
        return out.build()
    sets: dict[str, list[str]] = {}
    for n in sorted(status.nodes.values(), key=lambda n: n.name):
        if n.online and n.feature_set:
            sets.setdefault(n.feature_set, []).append(n.name)
    hosts = ctx.index.observed.hosts
    releases = ", ".join(f"{n} {hosts[n].os}" for n in sorted(hosts) if hosts[n].os)
    out.find("mixed-version", "warning", Subject(node=status.dc),
             "the cluster runs mixed Pacemaker versions (feature sets: "
             + "; ".join(f"{fs} on {', '.join(ns)}" for fs, ns in sorted(sets.items()))
             + (f"; {releases}" if releases else "")
             + f"; DC {status.dc} {status.dc_version or ''}".rstrip()
             + "): a rolling upgrade is under way. Safe: live migrations onto the newer "
               "nodes, and back for VMs started on the older ones. Not safe: sending a VM "
               "started on a newer QEMU to an older node (held: machine-type), upgrading the "
               "CIB schema before every node runs the new version, letting an old node leave "
               "once only new ones remain (it cannot rejoin until upgraded).")
    return out.build()
