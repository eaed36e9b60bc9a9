"""Balance by load: which one live migration, if any, would even out the nodes' CPU load.

Pure: loads in, one proposed move out, with its reason. A node's load is the CPU cores its
guests used over the last listing span (libvirt's CPU time, controller/model/events.py) over
the cores it has; the imbalance is the most loaded node's load less the least loaded one's.
A move is proposed only when the imbalance is above the threshold, and only if it lowers the
imbalance by at least the margin (hysteresis: two nodes nearly even are left alone, and a
move that merely swaps which node is busiest is never made); one move at a time; a VM moved
within its cooldown, whose load is not known, or that the file keeps off the target node
(allowed nodes, anti-affinity) is never a candidate. Pacemaker's own placement-strategy
places VMs when they start or fail over; this only proposes moves of running VMs, and each
is still previewed by Pacemaker's scheduler and held if it would move anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from controller.model.vms import cluster_vms


@dataclass(frozen=True)
class Guest:
    """A running VM, as balancing sees it."""

    vm: str
    node: str
    cores: float  # CPU cores used (libvirt's CPU time over the last listing span)
    allowed: frozenset[str] | None = None  # the file's placement.allowed; None: any
    apart_from: frozenset[str] = frozenset()  # VMs it must not share a node with


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str
    before: float  # the imbalance now
    after: float  # the imbalance once it is made

    def words(self) -> str:
        return (f"move {self.vm} from {self.source} to {self.target}: the nodes' CPU load "
                f"imbalance {self.before:.2f} -> {self.after:.2f}")


def loads(guests: Mapping[str, Guest], cpus: Mapping[str, int]) -> dict[str, float]:
    """Each node's load: its guests' cores over its own."""
    out = dict.fromkeys(cpus, 0.0)
    for g in guests.values():
        if g.node in out:
            out[g.node] += g.cores
    return {n: used / cpus[n] for n, used in out.items() if cpus[n] > 0}


def imbalance(load: Mapping[str, float]) -> float:
    return max(load.values()) - min(load.values()) if len(load) > 1 else 0.0


def _fits(g: Guest, target: str, guests: Mapping[str, Guest]) -> bool:
    if g.allowed is not None and target not in g.allowed:
        return False
    return not any(o.node == target and (o.vm in g.apart_from or g.vm in o.apart_from)
                   for o in guests.values())


def best_move(guests: Mapping[str, Guest], cpus: Mapping[str, int], *, threshold: float,
              margin: float, cooling: frozenset[str] = frozenset()) -> Move | None:
    """The one move from the busiest node that lowers the imbalance most, if by `margin`."""
    load = loads(guests, cpus)
    now = round(imbalance(load), 6)
    if now <= threshold:
        return None
    source = max(load, key=lambda n: (load[n], n))
    best: Move | None = None
    for g in sorted(guests.values(), key=lambda g: g.vm):
        if g.node != source or g.vm in cooling or g.cores <= 0:
            continue
        for target in sorted(load):
            if target == source or not _fits(g, target, guests):
                continue
            after = dict(load)
            after[source] -= g.cores / cpus[source]
            after[target] += g.cores / cpus[target]
            # rounded: a tie is a tie (the first VM and node by name), not float noise
            move = Move(vm=g.vm, source=source, target=target, before=round(now, 6),
                        after=round(imbalance(after), 6))
            if now - move.after >= margin and (best is None or move.after < best.after):
                best = move
    return best


def guests(index: ClusterIndex, desired: DesiredState) -> dict[str, Guest] | None:
    """Every running cluster VM with its load; None when one's load is not known (fewer than
    two listings on its node yet) or a VM is migrating: nothing is balanced on a guess."""
    out = {}
    by_name = {vm.name: vm for vm in desired.vms}
    names: dict[str, list[str]] = {}  # resource -> the domain names it may have
    for name, rid in cluster_vms(index, desired).items():
        names.setdefault(rid, []).append(name)
    for rid, candidates in sorted(names.items()):
        nodes = index.running.get(rid, ())
        if not nodes:
            continue
        found = [(n, d) for n in candidates
                 if (d := index.listed.get(n, {}).get(nodes[0])) is not None]
        if len(nodes) != 1 or rid in index.migrating or len(found) != 1 \
                or found[0][1].cpu_cores is None:
            return None
        name, dom = found[0]
        vm = by_name.get(name)
        out[name] = Guest(
            vm=name, node=nodes[0], cores=dom.cpu_cores or 0.0,
            allowed=frozenset(vm.placement.allowed) if vm and vm.placement.allowed else None,
            apart_from=frozenset(vm.anti_affinity) if vm else frozenset())
    return out


def node_cpus(index: ClusterIndex) -> dict[str, int]:
    """Nodes a VM may be moved to (online, not in standby or maintenance), with their cores."""
    return {n: index.observed.hosts[n].cpus for n, st in index.nodes.items()
            if st.online and not st.standby and not st.maintenance
            and n in index.observed.hosts}
