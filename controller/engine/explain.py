"""Every predicted move is asked for: the scheduler's transition, step by step, against the
actions of the patch (pure).

A VM may migrate, move, start or stop only if an action of this pass asked for exactly that VM:
its placement (a kvm-warden location constraint set or released), its run state (target-role),
or a declared drain of its node. Any other step the patch would cause -- a leftover's removal
moving a VM back where it was (no resource-stickiness), a storage constraint, a property, a
recovery meta attribute, a VM pushed by anti-affinity -- is unasked: the actions that cause it
are held (`would-move-unasked`) with a finding naming the VM, the step and the action, and the
rest of the patch is previewed again without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.model.actions import (
    AnyAction,
    Finding,
    RemoveConstraint,
    SetAllowedNodes,
    SetLocation,
    SetMeta,
    SetNodeAttribute,
    TransitionStep,
    describe,
    owned,
)
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from controller.model.machines import common_pin, lacks, machine_on
from controller.model.vms import is_vm_resource
from reconcilers import placement, rebalance

MOVES = frozenset({"migrate", "move", "start", "stop", "restart", "recover"})


def asked_for(patch: Sequence[AnyAction], index: ClusterIndex,
              prefers: dict[str, str]) -> set[str]:
    """The VMs an action of the patch asks to place, start or stop. `prefers`: resource ->
    the node the file prefers for it (a drain lifted asks for the VMs that prefer that node)."""
    out: set[str] = set()
    for a in patch:
        match a:
            case SetLocation(rsc=r) | SetAllowedNodes(rsc=r) if a.reconciler == placement.NAME:
                out.add(r)
            case SetLocation(rsc=r) if a.reconciler == rebalance.NAME:
                out.add(r)  # capacity.rebalance: apply asked for this one move
            case RemoveConstraint(id=i, rsc=r) if r and owned(i) and a.reconciler == placement.NAME:
                out.add(r)  # the file released this VM's placement
            case SetMeta(rsc=r, name="target-role"):
                out.add(r)
            case SetNodeAttribute(node=n):  # standby/maintenance: a declared drain or its end
                out |= {rid for rid, nodes in index.running.items() if n in nodes}
                out |= {rid for rid, node in prefers.items() if node == n}
    return out


def drained(patch: Sequence[AnyAction]) -> set[str]:
    """Nodes whose declared state the patch changes: VMs leaving or returning to them are
    what a drain (or its end) asks for."""
    return {a.node for a in patch if isinstance(a, SetNodeAttribute)}


def touches(action: AnyAction, rid: str) -> bool:
    return rid in {getattr(action, f, None) for f in ("rsc", "with_rsc", "first", "then")}


@dataclass(frozen=True)
class Unasked:
    step: TransitionStep
    causes: tuple[AnyAction, ...]  # the actions held for it


def unasked_moves(steps: Sequence[TransitionStep], patch: Sequence[AnyAction],
                  index: ClusterIndex, prefers: dict[str, str]) -> list[Unasked]:
    """The steps no action asked for, each with the actions to hold: those of the patch that
    ask for no VM and touch this one; else every such action; else the whole patch (a VM
    pushed aside by the moves that were asked for)."""
    asked = asked_for(patch, index, prefers)
    nodes = drained(patch)
    neutral = [a for a in patch if not any(touches(a, r) for r in asked)
               or isinstance(a, RemoveConstraint) and not owned(a.id)]
    out = []
    for s in steps:
        if s.action not in MOVES or s.resource in asked or not is_vm_resource(index, s.resource):
            continue
        if nodes & {s.from_node, s.to_node}:
            continue  # off a node being drained, or back onto one whose drain ended
        causes = [a for a in neutral if touches(a, s.resource)] or neutral or list(patch)
        out.append(Unasked(s, tuple(causes)))
    return out


def finding(u: Unasked, word: str) -> Finding:
    """What the operator reads: the VM, the step, the held actions, and what to do."""
    leftovers = [a for a in u.causes if isinstance(a, RemoveConstraint) and not owned(a.id)]
    advice = (" Without it Pacemaker would move the VM back: give the cluster a "
              "resource-stickiness (`pcs resource defaults update resource-stickiness=100`), "
              "or the VM a placement in the desired file." if leftovers else
              " Declare the VM's placement (or run state) in the desired file if this move is "
              "wanted.")
    return Finding(
        reconciler="preview", kind="unasked-move", severity="warning",
        subject=u.step.resource, rsc=u.step.resource,
        message=(f"held: {'; '.join(describe(a) for a in u.causes)} would make Pacemaker "
                 f"{word}, which nothing in the desired file asks for.{advice}"))


@dataclass(frozen=True)
class Blocked:
    """A predicted live migration the target's QEMU would refuse (a restart), and what to hold."""

    step: TransitionStep
    machine: str
    causes: tuple[AnyAction, ...]


def machine_blocked(steps: Sequence[TransitionStep], patch: Sequence[AnyAction],
                    index: ClusterIndex, desired: DesiredState) -> list[Blocked]:
    """Every predicted migration into a host that lacks the VM's machine type, asked for or
    not, with the actions to hold: those that touch the VM, else a drain of its node, else the
    whole patch."""
    out = []
    for s in steps:
        if s.action != "migrate" or not s.from_node or not s.to_node:
            continue
        machine = machine_on(index, desired, s.resource, s.from_node)
        if machine is None or not lacks(index, s.to_node, machine):
            continue
        causes = [a for a in patch if touches(a, s.resource)] or [
            a for a in patch if isinstance(a, SetNodeAttribute) and a.node == s.from_node
        ] or list(patch)
        out.append(Blocked(s, machine, tuple(causes)))
    return out


def blocked_finding(b: Blocked, index: ClusterIndex) -> Finding:
    pin = common_pin(index, b.machine)
    return Finding(
        reconciler="preview", kind="machine-type", severity="warning",
        subject=f"{b.step.resource}@{b.step.from_node}", rsc=b.step.resource,
        node=b.step.from_node,
        message=(f"held: {'; '.join(describe(a) for a in b.causes)} would make Pacemaker "
                 f"live-migrate {b.step.resource} {b.step.from_node} → {b.step.to_node}, whose "
                 f"QEMU lacks its machine type {b.machine}: the migration would fail and "
                 "Pacemaker restart it. Pin "
                 + (f"<type machine='{pin}'>" if pin else "a machine type every node has")
                 + " in its domain XML (it takes effect at its next start)"))
