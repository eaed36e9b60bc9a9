"""QEMU machine types: a running guest keeps the machine type it started with (`pc` resolves
to the newest the starting host's QEMU knows, e.g. pc-i440fx-10.0 on Debian 13), and a host
whose QEMU lacks it refuses the guest's live migration ("Emulator ... does not support machine
type"); Pacemaker then recovers by stop and start -- the guest restarts. During a rolling
upgrade every guest started on an upgraded node is in that trap (LAB.md section 6)."""

from __future__ import annotations

from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from controller.model.vms import declared, domain_names


def machine_on(index: ClusterIndex, desired: DesiredState, rid: str, node: str) -> str | None:
    """The machine type the VM runs with on `node`, as that node's libvirt lists it."""
    for name in domain_names(rid, declared(desired)):
        dom = index.listed.get(name, {}).get(node)
        if dom is not None and dom.machine:
            return dom.machine
    return None


def lacks(index: ClusterIndex, node: str, machine: str) -> bool:
    """Positive evidence only: the node's QEMU is known and offers no such machine type."""
    host = index.observed.hosts.get(node)
    return host is not None and bool(host.machines) and machine not in host.machines


def common_pin(index: ClusterIndex, machine: str) -> str | None:
    """The newest machine type of the same family (pc-i440fx-*, pc-q35-*) that every node with
    a known QEMU offers: what to pin in the guest's XML so that it can go anywhere."""
    family = machine.rsplit("-", 1)[0] + "-"
    known = [set(h.machines) for h in index.observed.hosts.values() if h.machines]
    if not known:
        return None
    shared = set.intersection(*known)
    candidates = [m for m in shared if m.startswith(family)]
    return max(candidates, key=_version_key) if candidates else None


def _version_key(m: str) -> tuple[int, ...]:
    tail = m.rsplit("-", 1)[-1]
    try:
        return tuple(int(x) for x in tail.split("."))
    except ValueError:
        return (-1,)
