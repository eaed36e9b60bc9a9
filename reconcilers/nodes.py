"""Nodes: a node the file declares `standby` is drained through Pacemaker, never by hand.

`cluster.nodes: [kvm1, {name: kvm3, state: standby}]` sets kvm3's permanent `standby` node
attribute (as `pcs node standby kvm3` does); Pacemaker then live-migrates every VM off it.
Back to `online`, the attribute is cleared and the VMs return to their preferred nodes.
`maintenance` sets the node's `maintenance` attribute (Pacemaker stops managing it).

How many VMs move at once: Pacemaker's own `migration-limit` cluster option (the number of
live migrations it runs in parallel on one node) is set to `policy.max_concurrent_migrations`
while a drain is declared -- every migration of a drain has the drained node as its source,
so the per-node limit is exactly the drain's limit, and Pacemaker keeps it through its own
retries and recoveries, which a limit kvm-warden enforced by feeding moves in slowly could not.

A drain no node could absorb (a VM whose allowed nodes are all draining, banned or offline) is
a finding, and the node is not put in standby: nothing moves.
"""

from __future__ import annotations

from controller.model.actions import Plan, SetNodeAttribute, SetProperty, Subject
from controller.model.context import Context
from controller.model.vms import is_vm_agent
from reconcilers.base import PlanBuilder, Scope

NAME = "nodes"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired = ctx.index, ctx.desired
    states = desired.cluster.node_states()
    _migration_limit(out, ctx, draining="standby" in states.values())
    if not states:
        return out.build()
    leaving = {n for n, s in states.items() if s != "online"}
    targets = {n for n, st in index.nodes.items()
               if st.online and not st.unclean and n not in leaving
               and (states.get(n) == "online" or not (st.standby or st.maintenance))}
    for node, want in sorted(states.items()):
        current = index.nodes.get(node)
        if current is None:
            continue  # not a cluster node (yet): the inventory has nothing to say about nodes
        if want == "standby" and not current.standby:
            blocked = _blocked_vms(ctx, node, targets)
            if blocked:
                out.find("drain-blocked", "critical", Subject(node=node),
                         f"drain of {node} not started: no node may take {', '.join(blocked)} "
                         f"(eligible nodes: {', '.join(sorted(targets)) or 'none'})")
                continue
        for attr, on in (("standby", want == "standby"), ("maintenance", want == "maintenance")):
            if on != (current.standby if attr == "standby" else current.maintenance):
                out.actions.append(SetNodeAttribute(
                    reconciler=NAME, node=node, name=attr, value="on" if on else "off",
                    why=f"the desired state has {node} {want}"))
    return out.build()


def _migration_limit(out: PlanBuilder, ctx: Context, draining: bool) -> None:
    """A drain's migration-limit, and its value before the drain put back when it ends (the
    file names no such property: kvm-warden leaves only what the file names)."""
    limit = str(ctx.desired.policy.max_concurrent_migrations)
    current = ctx.index.properties.get("migration-limit")
    if "migration-limit" in ctx.desired.cluster.properties:
        return  # the file's own value: the properties reconciler keeps it
    saved = ctx.ledger.saved_properties
    if draining and current != limit:
        was = "unset" if current is None else current
        out.actions.append(SetProperty(
            reconciler=NAME, name="migration-limit", value=limit, previous=current, saves=True,
            why=f"a drain live-migrates at most {limit} VMs at a time "
                f"(policy.max_concurrent_migrations; {was} again when the drain ends)"))
    elif not draining and "migration-limit" in saved and current == limit:
        before = saved["migration-limit"]
        out.actions.append(SetProperty(
            reconciler=NAME, name="migration-limit", value=before, restores=True,
            why="the drain is over: migration-limit as it was before it "
                f"({before if before is not None else 'unset, Pacemaker default'})"))


def _blocked_vms(ctx: Context, node: str, targets: set[str]) -> list[str]:
    """The VMs on `node` that no eligible node may take (allowed nodes and operator bans)."""
    index = ctx.index
    declared = {vm.resource_id: vm for vm in ctx.desired.vms}
    banned: dict[str, set[str]] = {}
    for c in index.location.values():
        if c.rsc and c.node and (c.score or "").startswith("-INFINITY") and not c.rule:
            banned.setdefault(c.rsc, set()).add(c.node)
    blocked = []
    for rid, cfg in sorted(index.configured.items()):
        if not is_vm_agent(cfg.agent) or node not in index.running.get(rid, ()):
            continue
        vm = declared.get(rid)
        allowed = set(vm.placement.allowed) if vm and vm.placement.allowed else set(targets)
        if not (allowed & targets) - banned.get(rid, set()):
            blocked.append(rid)
    return blocked
