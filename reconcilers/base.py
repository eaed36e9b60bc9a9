"""The Reconciler protocol and the plan it returns.

A reconciler is a pure function of (ClusterIndex, DesiredState): no I/O, no clock, no state of
its own; what it needs to remember between passes (health's cleanup history) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controller.model.actions import AnyAction, Finding
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex


@dataclass(frozen=True)
class Plan:
    actions: tuple[AnyAction, ...] = ()
    findings: tuple[Finding, ...] = ()

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.actions + other.actions, self.findings + other.findings)


@dataclass
class PlanBuilder:
    reconciler: str
    actions: list[AnyAction] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def find(self, severity: str, subject: str, message: str) -> None:
        self.findings.append(
            Finding(reconciler=self.reconciler, severity=severity, subject=subject, message=message)
        )

    def build(self) -> Plan:
        return Plan(tuple(self.actions), tuple(self.findings))


def remove_stale(out: PlanBuilder, index: ClusterIndex, owned: tuple[str, ...], wanted: set[str],
                 why: str) -> None:
    """Plan the removal of this reconciler's own constraints that nothing asks for any more.

    Only ids with the reconciler's own prefixes are candidates: kvm-warden never removes a
    constraint somebody else made (leftover cli-* constraints are handled by placement)."""
    from controller.model.actions import RemoveConstraint

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
    name: str

    def plan(self, index: ClusterIndex, desired: DesiredState) -> Plan: ...


def under(path: str, mountpoint: str) -> bool:
    """Whether a path lies below a mountpoint (by path components, not string prefix)."""
    import posixpath

    mp = posixpath.normpath(mountpoint)
    p = posixpath.normpath(path)
    return mp != "/" and p.startswith(mp.rstrip("/") + "/")
