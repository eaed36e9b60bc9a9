"""What a reviewed edit costs, in words and a severity, before anyone confirms it: a stop, a
retirement (the VM leaves the cluster's care) or maintenance (nothing is recovered there) in
red; a drain or a move, which live-migrates, as a warning; and every stop, restart or cold move
Pacemaker's own transition predicts, whatever the edit was. Pure: the review (app/edits.py)
calls it with what it already read."""

from __future__ import annotations

from typing import Literal

import msgspec

from controller.model.actions import TransitionStep
from controller.model.desired import DesiredState
from controller.model.observed import ObservedState
from controller.model.vms import is_vm_agent

Weight = Literal["danger", "warning", "info"]
_RANK: tuple[Weight, ...] = ("danger", "warning", "info")
DISRUPTIVE = frozenset({"stop", "restart", "recover", "move"})  # the guest is shut down or killed


class Consequence(msgspec.Struct, frozen=True, kw_only=True):
    weight: Weight
    text: str


def heaviest(items: tuple[Consequence, ...]) -> Weight:
    return min((c.weight for c in items), key=_RANK.index, default="info")


def _vm_loses(vm: str, before: DesiredState | None) -> str:
    """What a VM's entry in the file gives it, which a retirement takes away."""
    spec = before.vm_by_name().get(vm) if before is not None else None
    kept = []
    if spec is not None:
        if spec.anti_affinity:
            kept.append("its anti-affinity with " + ", ".join(spec.anti_affinity))
        if spec.placement.prefer or spec.placement.allowed:
            kept.append("its placement")
        if spec.storage:
            kept.append("its declared storage order")
    return ("; it loses " + ", ".join(kept)) if kept else ""


def _edit_weight(edit: msgspec.Struct, before: DesiredState | None, observed: ObservedState
                 ) -> list[Consequence]:
    kind = type(edit).__name__
    vm, node, state = (getattr(edit, a, None) for a in ("vm", "node", "state"))
    if kind == "RunState" and state == "stopped":
        return [Consequence(weight="danger", text=f"{vm} will be shut down and stay down: "
                            "no failover, no restart, until it is started again")]
    if kind == "Retire":
        keep = getattr(edit, "keep_running", False)
        return [Consequence(weight="danger", text=(
            f"{vm} leaves the cluster's care: it keeps running, but nothing restarts it if it "
            "crashes and nothing moves it if its node dies" if keep else
            f"{vm} is stopped and its resource removed") + _vm_loses(str(vm), before))]
    if kind == "NodeState" and state == "maintenance":
        return [Consequence(weight="danger", text=(
            f"{node} in maintenance: Pacemaker stops watching its resources; a VM that fails "
            "there is not recovered, and its VMs stay where they are"))]
    if kind == "NodeState" and state == "standby":
        guests = sorted(r.id for r in observed.status.resources
                        if is_vm_agent(r.agent) and r.active and node in r.nodes)
        return [Consequence(weight="warning", text=(
            f"{node} is drained: its {len(guests)} VM(s) live-migrate to the other nodes"
            + (f" ({', '.join(guests)})" if guests else "")
            + "; the cluster has one node fewer to fail over to until it is back"))]
    if kind == "Upgrade" and getattr(edit, "to", None) is not None:
        order = list(getattr(edit, "order", ()))
        return [Consequence(weight="warning", text=(
            f"{order[0] if order else 'the first node'} is drained now (its VMs live-migrate "
            "away), then each node in turn once the one before is back and verified: the "
            "cluster has one node fewer to fail over to until the upgrade is done"))]
    if kind == "Upgrade":
        return [Consequence(weight="info", text=(
            "the upgrade ends: a node it drained stays in standby until declared online"))]
    if kind == "Place":
        return [Consequence(weight="warning" if node else "info", text=(
            f"{vm} live-migrates to {node} if it runs elsewhere" if node else
            f"{vm} may run on any node; it stays where it is"))]
    return []


def _step_weight(step: TransitionStep) -> Consequence | None:
    where = " ".join(n for n in (step.from_node, step.to_node) if n)
    if step.action in DISRUPTIVE:
        verb = {"stop": "stop", "restart": "restart", "recover": "recover (restart)",
                "move": "cold-move (stop, then start)"}[step.action]
        return Consequence(weight="danger", text=f"Pacemaker would {verb} {step.resource}"
                           + (f" ({where})" if where else ""))
    if step.action == "migrate":
        return Consequence(weight="warning", text=f"Pacemaker would live-migrate "
                           f"{step.resource} {step.from_node} → {step.to_node}")
    return None


def consequences(edit: msgspec.Struct, before: DesiredState | None, observed: ObservedState,
                 steps: tuple[TransitionStep, ...]) -> tuple[Consequence, ...]:
    """The edit's own cost, then what the scheduler predicts beyond it, heaviest first."""
    out = _edit_weight(edit, before, observed)
    out += [c for s in steps if (c := _step_weight(s)) is not None]
    return tuple(sorted(dict.fromkeys(out), key=lambda c: _RANK.index(c.weight)))
