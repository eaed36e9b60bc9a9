"""Placement: `placement.allowed`/`prefer` and `anti_affinity` -> location/colocation constraints.

kvm-warden owns the constraints whose ids it builds here (`warden-prefer-R`, `warden-allowed-R`,
`warden-anti-A-B`): it adds the missing ones, rewrites those that differ, and removes those the
file no longer asks for. Pacemaker then moves the VMs (live, with allow-migrate=true). Constraints
with other ids are never touched, except the `cli-prefer-*` leftovers of
`crm_resource --move` (`pcs resource move`) once the move they asked for is done. A
`cli-ban-*` (`pcs resource ban`) is an operator's instruction and is never removed; one that
contradicts the file is reported.
"""

from __future__ import annotations

from controller.model.actions import (
    BALANCE_PREFIX,
    OWNED_PREFIX,
    PREFER_PREFIX,
    AddColocation,
    Plan,
    RemoveConstraint,
    SetAllowedNodes,
    SetLocation,
    Subject,
)
from controller.model.context import Context
from controller.model.desired import DesiredState, Vm
from controller.model.index import ClusterIndex
from controller.model.observed import LocationConstraint
from reconcilers.base import (
    Cause,
    PlanBuilder,
    Scope,
    did_you_mean,
    remove_stale,
    undeclared_vms,
)

NAME = "placement"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())
OWNED = (PREFER_PREFIX, f"{OWNED_PREFIX}allowed-", f"{OWNED_PREFIX}anti-")


def prefer_id(rid: str) -> str:
    return f"{PREFER_PREFIX}{rid}"


def allowed_id(rid: str) -> str:
    return f"{OWNED_PREFIX}allowed-{rid}"


def anti_id(a: str, b: str) -> str:
    x, y = sorted((a, b))
    return f"{OWNED_PREFIX}anti-{x}-{y}"


def allowed_matches(c: LocationConstraint, rid: str, nodes: tuple[str, ...]) -> bool:
    """Whether an existing constraint is exactly the rule SetAllowedNodes would write."""
    if c.rsc != rid or len(c.rules) != 1 or c.role is not None:
        return False
    rule = c.rules[0]
    if rule.opaque or (rule.score or "").upper() != "-INFINITY" or rule.boolean_op != "and":
        return False
    exprs = rule.expressions
    return all(e.attribute == "#uname" and e.operation == "ne" for e in exprs) and sorted(
        str(e.value) for e in exprs
    ) == sorted(nodes)


def foreign(cid: str) -> bool:
    """A constraint somebody else made (pcs, an operator), not a leftover of move/ban."""
    return not cid.startswith((*OWNED, BALANCE_PREFIX)) and not cid.startswith("cli-")


class Foreign:
    """Constraints somebody else made, by resource: built once per plan on first use, so that
    adopting at 5,000 VMs is not 5,000 walks over every constraint."""

    def __init__(self, index: ClusterIndex):
        self.index = index
        self._locations: dict[str, list[tuple[str, LocationConstraint]]] | None = None
        self._anti: dict[frozenset[str | None], str] | None = None

    def locations(self, rid: str) -> list[tuple[str, LocationConstraint]]:
        if self._locations is None:
            self._locations = {}
            for cid, c in self.index.location.items():
                if foreign(cid) and c.rsc is not None:
                    self._locations.setdefault(c.rsc, []).append((cid, c))
        return self._locations.get(rid, [])

    def anti(self, a: str, b: str) -> str | None:
        if self._anti is None:
            self._anti = {}
            for cid, c in self.index.colocation.items():
                if foreign(cid) and (c.score or "").strip().upper() == "-INFINITY":
                    self._anti.setdefault(frozenset({c.rsc, c.with_rsc}), cid)
        return self._anti.get(frozenset({a, b}))


def adopted_prefer(known: Foreign, rid: str, node: str, score: int) -> str | None:
    """An existing constraint under another id that already prefers `node` for `rid` at least
    as strongly as the file asks (policy.prefer_score): a weaker one (below the cluster's
    stickiness, say) would not do what the file means."""
    for cid, c in known.locations(rid):
        if c.node == node and not c.rule and c.role is None and score_value(c.score) >= score:
            return cid
    return None


def score_value(score: str | None) -> int:
    """A Pacemaker score as a number (INFINITY = 1,000,000); not a positive score: 0."""
    s = (score or "").strip().upper().lstrip("+")
    if s == "INFINITY":
        return 1_000_000
    return int(s) if s.isdigit() else 0


def adopted_allowed(known: Foreign, rid: str, nodes: tuple[str, ...]) -> str | None:
    return next((cid for cid, c in known.locations(rid) if allowed_matches(c, rid, nodes)), None)


def adopted_anti(known: Foreign, a: str, b: str) -> str | None:
    return known.anti(a, b)


def plan(ctx: Context) -> Plan:
    """`ctx.scope`: plan just these VMs (an incremental pass after events); removals of stale
    constraints and leftovers of other VMs wait for the next full pass."""
    out = PlanBuilder(NAME)
    index, desired, only = ctx.index, ctx.desired, ctx.scope
    wanted: set[str] = set()
    known = Foreign(index)
    for vm in ctx.in_scope():
        if vm.resource_id in index.exists:
            # (a resource that does not exist is reported by the inventory reconciler)
            _prefer(out, ctx, vm, known, wanted)
            _allowed(out, ctx, vm, known, wanted)
            _anti_affinity(out, ctx, vm, known, wanted)
    if only is not None:
        return out.build()
    undeclared = undeclared_vms(index, desired)
    kept = remove_stale(out, index, OWNED, wanted, "no longer asked for by the desired state",
                        keep=frozenset(undeclared))
    _report_undeclared(out, index, desired, undeclared, kept)
    if desired.policy.clear_move_leftovers:
        _clear_move_leftovers(out, ctx)
    report_bans(out, ctx)
    report_unsatisfiable(out, ctx)
    return out.build()


def _prefer(out: PlanBuilder, ctx: Context, vm: Vm, known: Foreign, wanted: set[str]
            ) -> None:
    prefer, rid = vm.placement.prefer, vm.resource_id
    if prefer is None:
        return
    policy = ctx.desired.policy
    cid = prefer_id(rid)
    wanted.add(cid)
    have = ctx.index.location.get(cid)
    if have is None and adopted_prefer(known, rid, prefer, policy.prefer_score):
        return  # an equivalent pcs-made preference satisfies the file: adopted as it is
    score = str(policy.prefer_score)
    if have is None or (have.rsc, have.node, have.score, have.rule, have.role) != (
            rid, prefer, score, False, None):
        out.actions.append(
            SetLocation(reconciler=NAME, id=cid, rsc=rid, node=prefer, score=score,
                        why=f"{vm.name} prefers {prefer}"
                        + ("" if have is None else f" (constraint had {have.node} {have.score})")))


def _allowed(out: PlanBuilder, ctx: Context, vm: Vm, known: Foreign, wanted: set[str]
             ) -> None:
    allowed, rid = vm.placement.allowed, vm.resource_id
    if not allowed:
        return
    cid = allowed_id(rid)
    wanted.add(cid)
    nodes = tuple(sorted(set(allowed)))
    have = ctx.index.location.get(cid)
    if have is None and adopted_allowed(known, rid, nodes):
        return  # adopted
    if have is None or not allowed_matches(have, rid, nodes):
        out.actions.append(
            SetAllowedNodes(reconciler=NAME, id=cid, rsc=rid, nodes=nodes,
                            why=f"{vm.name} may only run on {', '.join(nodes)}"))


def _anti_affinity(out: PlanBuilder, ctx: Context, vm: Vm, known: Foreign,
                   wanted: set[str]) -> None:
    by_name = ctx.desired.vm_by_name()
    for other_name in vm.anti_affinity:
        other = by_name.get(other_name)
        if other is None or other.resource_id not in ctx.index.exists:
            continue
        a, b = sorted((vm.resource_id, other.resource_id))
        cid = anti_id(a, b)
        if cid in wanted:
            continue  # both VMs name each other: one constraint for the pair
        wanted.add(cid)
        have = ctx.index.colocation.get(cid)
        if have is None and adopted_anti(known, a, b):
            continue  # adopted
        if have is None or (have.rsc, have.with_rsc, have.score) != (a, b, "-INFINITY"):
            out.actions.append(
                AddColocation(reconciler=NAME, id=cid, rsc=a, with_rsc=b, score="-INFINITY",
                              why="{} and {} must never share a node".format(
                                  *sorted((vm.name, other_name)))))


def _clear_move_leftovers(out: PlanBuilder, ctx: Context) -> None:
    """`pcs resource move` leftovers (cli-prefer-*) of the file's VMs, once they settled there."""
    index = ctx.index
    managed = {vm.resource_id for vm in ctx.desired.vms}
    for cid, c in sorted(index.location.items()):
        if c.rsc not in managed or c.node is None or not cid.startswith("cli-prefer-"):
            continue
        rid = c.rsc
        nodes = index.running.get(rid, ())
        settled = bool(nodes) and rid not in index.migrating and len(nodes) == 1
        if settled and nodes == (c.node,):
            out.actions.append(RemoveConstraint(
                reconciler=NAME, id=cid, rsc=rid,
                why=f"leftover of a manual move: {rid} now runs on {c.node}"))


def report_unsatisfiable(out: PlanBuilder, ctx: Context) -> None:
    """A VM whose preference kvm-warden already set and Pacemaker does not honour: say why
    (what wins over it), instead of drifting in silence. Counted once it persists (a VM being
    migrated there is not yet on its node)."""
    index, desired = ctx.index, ctx.desired
    drained = {n for n, state in desired.cluster.node_states().items() if state == "standby"}
    for vm in ctx.in_scope():
        rid, prefer = vm.resource_id, vm.placement.prefer
        nodes = index.running.get(rid, ())
        mine = index.location.get(prefer_id(rid))
        if (prefer is None or not nodes or prefer in nodes or rid in index.migrating
                or rid in index.transitioning or mine is None or mine.node != prefer
                or prefer in drained):  # the file itself keeps it off: what it asked
            continue
        why = unsatisfiable_because(ctx, rid, prefer, vm.placement.allowed)
        out.find("placement-unsatisfiable", "warning", Subject(rid, prefer),
                 f"{vm.name} cannot run on its preferred node {prefer} (it runs on "
                 f"{', '.join(nodes)}): {why.text}", reason=why.reason)


def unsatisfiable_because(ctx: Context, rid: str, node: str,
                          allowed: tuple[str, ...] | None) -> Cause:
    """What keeps `rid` off `node`, from the cluster's own constraints and node states."""
    index = ctx.index
    n = index.nodes.get(node)
    if n is None or not n.online:
        return Cause("NodeOffline", f"{node} is not online")
    if n.unclean:
        return Cause("NodeUnclean", f"{node} is UNCLEAN")
    if n.standby or n.maintenance:
        return Cause("NodeStandby" if n.standby else "NodeMaintenance",
                     f"{node} is in {'standby' if n.standby else 'maintenance'}")
    if allowed is not None and node not in allowed:
        return Cause("NotAllowed", f"the desired file allows it only on {', '.join(allowed)}")
    for cid, c in sorted(index.location.items()):
        if c.rsc == rid and c.node == node and (c.score or "").strip().lstrip("-").upper() \
                == "INFINITY" and (c.score or "").strip().startswith("-"):
            ban = cid.startswith("cli-ban-")
            return Cause("OperatorBan" if ban else "Banned",
                         f"{cid} bans it from {node}" + (" (an operator's `pcs resource ban`: "
                         f"`pcs resource clear {rid}` lifts it)" if ban else ""))
    for cid, col in sorted(index.colocation.items()):
        if (col.score or "").strip().upper() != "-INFINITY" or rid not in (col.rsc, col.with_rsc):
            continue
        other = col.with_rsc if col.rsc == rid else col.rsc
        if other and node in index.running.get(other, ()):
            return Cause("AntiAffinity", f"anti-affinity {cid} with {other}, which runs on {node}")
    return Cause("OutScored", "a stronger score elsewhere wins (resource-stickiness, another "
                 "location constraint, utilization); `crm_simulate -sL` shows the scores")


def report_bans(out: PlanBuilder, ctx: Context) -> None:
    """`cli-ban-*` (`pcs resource ban`) is an operator's instruction: never removed here (that is
    `pcs resource clear`, the operator's call). A ban that contradicts the file is a finding."""
    index, desired = ctx.index, ctx.desired
    banned: dict[str, set[str]] = {}
    for cid, c in index.location.items():
        if cid.startswith("cli-ban-") and c.rsc and c.node:
            banned.setdefault(c.rsc, set()).add(c.node)
    online = {n for n, st in index.nodes.items() if st.online}
    for vm in desired.vms:
        nodes = banned.get(vm.resource_id)
        if not nodes:
            continue
        rid, prefer, allowed = vm.resource_id, vm.placement.prefer, vm.placement.allowed
        eligible = (set(allowed) if allowed else online or set(index.node_names)) - nodes
        for node in sorted(nodes):
            if node == prefer:
                why = f"it bans {vm.name}'s preferred node"
            elif allowed and eligible.isdisjoint(allowed):
                why = f"with the other bans it leaves {vm.name} none of its allowed nodes"
            elif vm.state == "running" and not (eligible & online if online else eligible):
                why = f"with the other bans it keeps {vm.name}, which should run, from running"
            else:
                continue
            out.find("operator-ban", "warning", Subject(rid, node),
                     f"operator ban cli-ban-{rid}-on-{node} contradicts the desired state: {why}; "
                     f"kept (clear it with `pcs resource clear {rid}` when the evacuation is over)")


def _report_undeclared(out: PlanBuilder, index: ClusterIndex, desired: DesiredState,
                       undeclared: dict[str, str], kept: list[str]) -> None:
    """A VM resource whose constraints were kept because the file no longer names it: say so,
    with the file's closest unmatched name (a rename or a typo), until it is named or retired."""
    unmatched = [vm.name for vm in desired.vms if vm.resource_id not in index.exists]
    for rid, name in sorted(undeclared.items()):
        mine = [cid for cid in kept if rid in _resources(index, cid)]
        if not mine:
            continue
        out.find("vm-undeclared", "warning", Subject(rid),
                 f"{rid} runs in the cluster but no VM of the desired file names it: its "
                 f"constraints stay ({', '.join(mine)}){did_you_mean(name, unmatched)}; name it "
                 f"again, or retire it (`- name: {name}` with `state: absent`)")


def _resources(index: ClusterIndex, cid: str) -> tuple[str | None, ...]:
    if cid in index.location:
        return (index.location[cid].rsc,)
    if cid in index.colocation:
        c = index.colocation[cid]
        return (c.rsc, c.with_rsc)
    return ()
