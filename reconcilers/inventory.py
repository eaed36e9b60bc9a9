"""Inventory: what the file names but the cluster lacks. Findings only, never actions."""

from __future__ import annotations

from controller.model.actions import Plan, Subject
from controller.model.context import Context
from controller.model.vms import is_vm_agent
from reconcilers.base import PlanBuilder, Scope, did_you_mean, undeclared_vms

NAME = "inventory"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired = ctx.index, ctx.desired
    undeclared = undeclared_vms(index, desired)  # a typo's likely meaning
    for vm in desired.vms:
        rid = vm.resource_id
        if rid not in index.exists:
            if vm.config is not None or vm.state == "absent":
                continue  # enroll.py's: it brings it in, or it is out
            out.find("missing-resource", "warning", Subject(rid),
                     f"VM {vm.name}: no Pacemaker resource {rid!r}"
                     f"{did_you_mean(vm.name, undeclared.values())}; create it "
                     "(pcs resource create ... ocf:heartbeat:VirtualDomain), or give its "
                     "`config:` and kvm-warden enrolls it")
            continue
        cfg = index.configured.get(rid)
        if cfg is not None and cfg.agent and not is_vm_agent(cfg.agent):
            out.find("wrong-agent", "warning", Subject(rid),
                     f"VM {vm.name}: resource {rid!r} is {cfg.agent}, "
                     "not ocf:heartbeat:VirtualDomain")
        nodes = (vm.placement.allowed or ()) + ((vm.placement.prefer,) if vm.placement.prefer else ())
        for node in nodes:
            if index.node_names and node not in index.node_names:
                out.find("unknown-node", "warning", Subject(rid),
                         f"VM {vm.name}: node {node!r} is not a cluster node")
    for st in desired.storage:
        for rid in (st.resource, *st.requires):
            if rid not in index.exists:
                out.find("missing-storage-resource", "warning", Subject(rid),
                         f"storage {st.name}: no Pacemaker resource {rid!r}")
    return out.build()
