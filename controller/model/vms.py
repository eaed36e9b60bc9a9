"""Which libvirt domains are cluster VMs, and which resource each is: the desired file's VMs by
their names, and every other VirtualDomain resource of the CIB by the `vm-NAME` convention.

Findings that protect VMs (paused guests, out-of-band changes, history) cover every cluster VM,
listed in the file or not; what kvm-warden enforces stays limited to the VMs the file lists.
"""

from __future__ import annotations

from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex


def domain_names(rid: str, desired: DesiredState) -> tuple[str, ...]:
    """The libvirt domain name(s) a VirtualDomain resource may run as: the file's name for a
    listed VM; by the `vm-NAME` convention (or the id itself) for one the file does not list."""
    for vm in desired.vms:
        if vm.resource_id == rid:
            return (vm.name,)
    return (rid.removeprefix("vm-"), rid) if rid.startswith("vm-") else (rid,)


def vm_resources(index: ClusterIndex, desired: DesiredState) -> list[str]:
    """Every VirtualDomain resource of the CIB, and every VM resource the file declares."""
    rids = {rid for rid, cfg in index.configured.items()
            if cfg.parent is None and (cfg.agent or "").endswith(":VirtualDomain")}
    rids.update(vm.resource_id for vm in desired.vms)
    return sorted(rids)


def cluster_vms(index: ClusterIndex, desired: DesiredState) -> dict[str, str]:
    """libvirt domain name -> resource id of every cluster VM. A name the file gives wins over
    a name the convention guesses for another resource."""
    out = {vm.name: vm.resource_id for vm in desired.vms}
    for rid in vm_resources(index, desired):
        for name in domain_names(rid, desired):
            out.setdefault(name, rid)
    return out


def vm_names(vms: dict[str, str]) -> dict[str, str]:
    """resource id -> VM name, from `cluster_vms`: the first name of each resource (the file's
    name, or the id without its `vm-` prefix)."""
    out: dict[str, str] = {}
    for name, rid in vms.items():
        out.setdefault(rid, name)
    return out
