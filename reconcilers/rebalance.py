"""Rebalance: with `capacity.rebalance: propose` or `apply`, the one live migration that would
even out the nodes' CPU load (controller/model/balance.py), from libvirt's CPU time as the
agents list it -- on full passes. Only on evidence: while any running VM's load is not known
yet (fewer than two listings on its node), or a VM is migrating, nothing is proposed. The
proposal is a finding said once it persists (the ledger's timers).

With `apply`, a proposal that has held `rebalance_hold_seconds` is made: a kvm-warden location
constraint (`warden-balance-RSC`, INFINITY on the target), previewed like every change -- the
VM's move is the one this action asks for, anything else it would move holds it -- and gated
by N+1 admission. Once the VM runs there the constraint is removed and its stickiness keeps it
(a removal that would move it back is held by the preview). One move at a time: while a
balance constraint exists nothing else is proposed. Turning rebalancing off, or the target
leaving, removes it too. VMs the file places (`placement.prefer`) are never moved by load.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.model.actions import (
    BALANCE_PREFIX,
    Plan,
    RemoveConstraint,
    SetLocation,
    Subject,
)
from controller.model.balance import Move, best_move, guests, node_cpus
from controller.model.context import Context
from controller.model.desired import Capacity
from controller.model.observed import LocationConstraint
from controller.model.vms import cluster_vms
from reconcilers.base import PlanBuilder, Scope

NAME = "rebalance"
SCOPE: Scope = "cluster"  # full passes only
# A move Pacemaker has not made in this long (no room there after all, a constraint it weighs
# higher) is given up: its constraint removed, the VM left in its cooldown.
MOVE_SECONDS = 300.0


def balance_id(rid: str) -> str:
    return f"{BALANCE_PREFIX}{rid}"


def held(ctx: Context, rids: Mapping[str, str], seconds: int) -> frozenset[str]:
    """VMs not to move: moved by rebalancing within the cooldown, or placed by the file.
    `rids`: VM name -> resource id (cluster_vms)."""
    out = {vm.name for vm in ctx.desired.vms if vm.placement.prefer is not None}
    out |= {name for name, rid in rids.items()
            if ctx.now - ctx.ledger.balanced_at.get(rid, float("-inf")) < seconds}
    return frozenset(out)


def _follow(ctx: Context, out: PlanBuilder, moves: dict[str, LocationConstraint]) -> None:
    """The move in progress: removed once done, or when it no longer applies."""
    cap, index = ctx.desired.capacity, ctx.index
    usable = node_cpus(index)
    for cid, c in sorted(moves.items()):
        rid, target = c.rsc or "", c.node or ""
        where = index.running.get(rid, ())
        if where == (target,) and rid not in index.migrating:
            why = f"{rid} runs on {target} now: its stickiness keeps it there"
        elif cap is None or cap.rebalance != "apply":
            why = "capacity.rebalance no longer applies"
        elif target not in usable or rid not in index.configured:
            why = f"{target} can no longer take {rid}"
        elif rid not in index.migrating and \
                ctx.now - ctx.ledger.balanced_at.get(rid, ctx.now) > MOVE_SECONDS:
            why = f"Pacemaker has not moved {rid} to {target} in {MOVE_SECONDS:.0f} s: given up"
        else:
            out.find("rebalance-moving", "info", Subject(rsc=rid, node=target),
                     f"moving {rid} to {target} to even out the CPU load ({cid})")
            continue
        out.actions.append(RemoveConstraint(reconciler=NAME, id=cid, rsc=rid, why=why))


def _propose(ctx: Context, out: PlanBuilder, cap: Capacity, move: Move, rid: str | None
             ) -> None:
    about = Subject(rsc=rid, node=move.source)
    out.find("rebalance-proposed", "info", about,
             f"{move.words()} (capacity.rebalance: {cap.rebalance}; threshold "
             f"{cap.rebalance_threshold}, margin {cap.rebalance_margin})", reason="LoadImbalance")
    since = ctx.ledger.finding_since.get(("rebalance-proposed", str(about)))
    if rid and cap.rebalance == "apply" and since is not None \
            and ctx.now - since >= cap.rebalance_hold_seconds:
        out.actions.append(SetLocation(
            reconciler=NAME, id=balance_id(rid), rsc=rid, node=move.target, score="INFINITY",
            why=f"{move.words()}, uneven for {ctx.now - since:.0f} s (capacity.rebalance: "
                "apply)"))


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    cap, index = ctx.desired.capacity, ctx.index
    moves = {cid: c for cid, c in index.location.items() if cid.startswith(BALANCE_PREFIX)}
    if moves:
        _follow(ctx, out, moves)
        return out.build()
    cpus = node_cpus(ctx.index)
    found = guests(index, ctx.desired) if cap is not None and cap.rebalance != "off" else None
    if cap is None or found is None or len(cpus) < 2:
        return out.build()
    rids = cluster_vms(index, ctx.desired)
    move = best_move(found, cpus, threshold=cap.rebalance_threshold,
                     margin=cap.rebalance_margin,
                     cooling=held(ctx, rids, cap.rebalance_cooldown_seconds))
    if move is not None:
        _propose(ctx, out, cap, move, rids.get(move.vm))
    return out.build()
