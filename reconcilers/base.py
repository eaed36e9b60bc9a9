"""The Reconciler protocol and the helpers reconcilers share.

A reconciler is a pure function of one Context (index, desired, scope, ledger view, now): no
I/O, no clock, no state of its own; what it needs to remember between passes (health's cleanup
history) comes in through the ledger's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controller.model.actions import (
    AnyAction,
    Finding,
    FindingKind,
    Plan,
    RemoveConstraint,
    Severity,
    Subject,
)
from controller.model.context import Context
from controller.model.index import ClusterIndex


@dataclass
class PlanBuilder:
    reconciler: str
    actions: list[AnyAction] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def find(self, kind: FindingKind, severity: Severity, about: Subject, message: str,
             urgent: bool = False) -> None:
        self.findings.append(Finding(reconciler=self.reconciler, kind=kind, severity=severity,
                                     subject=str(about), rsc=about.rsc, node=about.node,
                                     message=message, urgent=urgent))

    def build(self) -> Plan:
        return Plan(tuple(self.actions), tuple(self.findings))


def remove_stale(out: PlanBuilder, index: ClusterIndex, owned: tuple[str, ...], wanted: set[str],
                 why: str) -> None:
    """Plan the removal of this reconciler's own constraints that nothing asks for any more.

    Only ids with the reconciler's own prefixes are candidates: kvm-warden never removes a
    constraint somebody else made (leftover cli-* constraints are handled by placement)."""
    tables: list[dict[str, str | None]] = [
        {cid: c.rsc for cid, c in index.location.items()},
        {cid: c.then for cid, c in index.order.items()},
        {cid: c.rsc for cid, c in index.colocation.items()},
    ]
    for table in tables:
        for cid, rsc in sorted(table.items()):
            if cid.startswith(owned) and cid not in wanted:
                out.actions.append(RemoveConstraint(reconciler=out.reconciler, id=cid, rsc=rsc,
                                                    why=why))


class Reconciler(Protocol):
    """Every reconciler module: a NAME and a pure `plan(ctx)`; reconcilers.all.ALL lists them."""

    NAME: str

    def plan(self, ctx: Context) -> Plan: ...


def under(path: str, mountpoint: str) -> bool:
    """Whether a path lies below a mountpoint (by path components, not string prefix)."""
    import posixpath

    mp = posixpath.normpath(mountpoint)
    p = posixpath.normpath(path)
    return mp != "/" and p.startswith(mp.rstrip("/") + "/")
