"""Capacity: sizes and capacity in Pacemaker, when the file's `capacity:` section asks.

Each VM resource's `<utilization>`: `cpu` its vCPUs, `memory` its memory in MiB plus the
declared overhead (from its domain XML as the node running it lists it). Each node's: `cpu` and
`memory` (MiB) as its libvirt reports them minus the host's reserve, and `hv_memory` and
`host_memory` the same as `memory` (VirtualDomain sets each VM's own: the node must offer
them). And `placement-strategy` as the file says (unless `cluster.properties` names it), so
that Pacemaker's scheduler places by them -- after a node's failure too (Pacemaker Explained,
"Utilization and Placement Strategy"). Owned like every change: previewed (a change that would
move a VM nobody asked to move is held), audited, and only for what the file names. A VM
nobody lists yet (stopped everywhere) keeps what it has: sizes come from evidence, never
guessed.
"""

from __future__ import annotations

from controller.model.actions import Plan, SetProperty, SetUtilization
from controller.model.context import Context
from controller.model.desired import Capacity
from controller.model.index import ClusterIndex
from controller.model.vms import declared, domain_names, vm_resources
from reconcilers.base import PlanBuilder, Scope

NAME = "capacity"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one
MIB = 1024
AGENT_MEMORY = ("hv_memory", "host_memory")  # VirtualDomain's own utilization names


def vm_size(index: ClusterIndex, rid: str, names: tuple[str, ...], cap: Capacity
            ) -> tuple[tuple[str, str], ...] | None:
    """(cpu, memory MiB incl. overhead) of a VM as a node lists it, or None when unknown."""
    for name in names:
        for dom in index.listed.get(name, {}).values():
            if dom.vcpus and dom.memory_kib:
                return (("cpu", str(dom.vcpus)),
                        ("memory", str(-(-dom.memory_kib // MIB) + cap.vm_overhead_mib)))
    return None


def node_capacity(index: ClusterIndex, node: str, cap: Capacity
                  ) -> tuple[tuple[str, str], ...] | None:
    host = index.observed.hosts.get(node)
    if host is None:
        return None
    memory = str(max(0, host.memory_kib // MIB - cap.host_reserve_mib))
    # hv_memory and host_memory: what VirtualDomain itself writes on each VM (its
    # autoset_utilization_* options, on by default: the domain's memory). A node that does not
    # offer them has none, and under a utilization strategy Pacemaker would stop every VM
    # (seen on the lab); `memory`, with the overhead, is the one that binds.
    return (("cpu", str(max(0, host.cpus - cap.host_reserve_cpus))), ("memory", memory),
            *((name, memory) for name in AGENT_MEMORY))


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    cap = ctx.desired.capacity
    if cap is None:
        return out.build()
    index = ctx.index
    cib = index.observed.cib
    listed = declared(ctx.desired)
    for rid in vm_resources(index, ctx.desired):
        cfg = index.configured.get(rid)
        size = vm_size(index, rid, domain_names(rid, listed), cap)
        if cfg is None or size is None:
            continue
        if any(cfg.utilization.get(k) != v for k, v in size):
            out.actions.append(SetUtilization(
                reconciler=NAME, target="resource", name=rid, values=size,
                why=f"{rid} takes " + ", ".join(f"{k} {v}" for k, v in size)
                    + f" (its domain XML, memory + {cap.vm_overhead_mib} MiB overhead)"))
    for node in sorted(index.node_names):
        offer = node_capacity(index, node, cap)
        have = cib.node_utilization.get(node, {}) if cib is not None else {}
        if offer is not None and any(have.get(k) != v for k, v in offer):
            out.actions.append(SetUtilization(
                reconciler=NAME, target="node", name=node, values=offer,
                why=f"{node} offers " + ", ".join(f"{k} {v}" for k, v in offer)
                    + f" (libvirt's, minus the host reserve: {cap.host_reserve_cpus} CPU, "
                      f"{cap.host_reserve_mib} MiB)"))
    if "placement-strategy" not in ctx.desired.cluster.properties \
            and index.properties.get("placement-strategy") != cap.placement_strategy:
        out.actions.append(SetProperty(
            reconciler=NAME, name="placement-strategy", value=cap.placement_strategy,
            why=f"capacity.placement_strategy: Pacemaker places VMs by their size "
                f"({cap.placement_strategy})"))
    return out.build()
