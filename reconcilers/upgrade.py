"""The declared rolling upgrade (controller/model/upgrade.py), said: where it stands, which
node is ready to upgrade, why it waits. Its actions are the nodes reconciler's: plan_all hands
every reconciler the desired state with the upgrade's current node drained or brought back."""

from __future__ import annotations

from controller.model.actions import Plan, Subject
from controller.model.context import Context
from controller.model.upgrade import UpgradeProgress
from reconcilers.base import PlanBuilder, Scope

NAME = "upgrade"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context, up: UpgradeProgress | None) -> Plan:
    out = PlanBuilder(NAME)
    if up is None:
        return out.build()
    cur = up.current
    if cur is None:
        out.find("upgrade-done", "info", Subject(name="upgrade"),
                 f"every node of the upgrade runs {up.to}: remove the upgrade section")
        return out.build()
    done = [p.node for p in up.nodes if p.step == "done"]
    said = f"rolling upgrade to {up.to}, {len(done)} of {len(up.nodes)} nodes done: {cur.detail}"
    if cur.step == "ready":
        out.find("upgrade-ready", "warning", Subject(node=cur.node), said)
    elif cur.step == "held":
        out.find("upgrade-held", "warning", Subject(node=cur.node), said, reason=cur.reason)
    else:
        out.find("upgrade-step", "info", Subject(node=cur.node), said)
    return out.build()
