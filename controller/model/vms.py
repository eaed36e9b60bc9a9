"""Which libvirt domains are cluster VMs, and which resource each is: the desired file's VMs by
their names, and every other VirtualDomain resource of the CIB by the `vm-NAME` convention.

Findings that protect VMs (paused guests, out-of-band changes, history) cover every cluster VM,
listed in the file or not; what kvm-warden enforces stays limited to the VMs the file lists.
Everything here is linear in the VMs (or in the scope's names): it runs in every pass.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from controller.model.names import VM_PREFIX, conventional_name, conventional_resource


def declared(desired: DesiredState) -> dict[str, str]:
    """resource id -> VM name of the VMs the file lists (compute once per pass)."""
    return {vm.resource_id: vm.name for vm in desired.vms}


def domain_names(rid: str, listed: Mapping[str, str]) -> tuple[str, ...]:
    """The libvirt domain name(s) a VirtualDomain resource may run as: the file's name for a
    listed VM (`listed`: from `declared`); by the `vm-NAME` convention (or the id itself) for
    one the file does not list."""
    name = listed.get(rid)
    if name is not None:
        return (name,)
    return (conventional_name(rid), rid) if rid.startswith(VM_PREFIX) else (rid,)


def is_vm_agent(agent: str | None) -> bool:
    """The one test of what a VM is, in the CIB or in crm_mon: a VirtualDomain resource
    (ocf:heartbeat:VirtualDomain, whatever the provider)."""
    return (agent or "").endswith(":VirtualDomain")


def is_vm_resource(index: ClusterIndex, rid: str) -> bool:
    cfg = index.configured.get(rid)
    return cfg is not None and cfg.parent is None and is_vm_agent(cfg.agent)


def vm_resources(index: ClusterIndex, desired: DesiredState) -> list[str]:
    """Every VirtualDomain resource of the CIB, and every VM resource the file declares."""
    rids = {rid for rid in index.configured if is_vm_resource(index, rid)}
    rids.update(vm.resource_id for vm in desired.vms)
    return sorted(rids)


def cluster_vms(index: ClusterIndex, desired: DesiredState,
                only: frozenset[str] | None = None) -> dict[str, str]:
    """libvirt domain name -> resource id of every cluster VM (with `only`: of those domain
    names alone, without walking the others). A name the file gives wins over a name the
    convention guesses for another resource."""
    listed = declared(desired)
    out = {vm.name: vm.resource_id for vm in desired.vms
           if only is None or vm.name in only}
    if only is not None:
        for name in sorted(only - out.keys()):
            # the resources whose conventional names include `name`, in cluster_vms' order
            for rid in sorted({conventional_resource(name), name}):
                if rid not in listed and is_vm_resource(index, rid) and \
                        name in domain_names(rid, listed):
                    out[name] = rid
                    break
        return out
    for rid in vm_resources(index, desired):
        if rid not in listed:
            for name in domain_names(rid, listed):
                out.setdefault(name, rid)
    return out


def vm_names(vms: dict[str, str]) -> dict[str, str]:
    """resource id -> VM name, from `cluster_vms`: the first name of each resource (the file's
    name, or the id without its `vm-` prefix)."""
    out: dict[str, str] = {}
    for name, rid in vms.items():
        out.setdefault(rid, name)
    return out
