"""Inventory: what the file names but the cluster lacks. Findings only, never actions."""

from __future__ import annotations

from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from reconcilers.base import Plan, PlanBuilder

NAME = "inventory"


def plan(index: ClusterIndex, desired: DesiredState) -> Plan:
    out = PlanBuilder(NAME)
    for vm in desired.vms:
        rid = vm.resource_id
        if rid not in index.exists:
            out.find("warning", rid, f"VM {vm.name}: no Pacemaker resource {rid!r}; create it "
                     "(pcs resource create ... ocf:heartbeat:VirtualDomain) to put it under "
                     "cluster control")
            continue
        cfg = index.configured.get(rid)
        if cfg is not None and cfg.agent and not cfg.agent.endswith(":VirtualDomain"):
            out.find("warning", rid, f"VM {vm.name}: resource {rid!r} is {cfg.agent}, "
                     "not ocf:heartbeat:VirtualDomain")
        nodes = (vm.placement.allowed or ()) + ((vm.placement.prefer,) if vm.placement.prefer else ())
        for node in nodes:
            if index.node_names and node not in index.node_names:
                out.find("warning", rid, f"VM {vm.name}: node {node!r} is not a cluster node")
    for st in desired.storage:
        for rid in (st.resource, *st.requires):
            if rid not in index.exists:
                out.find("warning", rid, f"storage {st.name}: no Pacemaker resource {rid!r}")
    return out.build()
