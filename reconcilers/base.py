"""The Reconciler protocol and the plan it returns.

A reconciler is a pure function of (ClusterIndex, DesiredState): no I/O, no clock, no state of
its own; what it needs to remember between passes (health's cleanup history) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controller.actions import AnyAction, Finding
from controller.desired import DesiredState
from controller.index import ClusterIndex


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


class Reconciler(Protocol):
    name: str

    def plan(self, index: ClusterIndex, desired: DesiredState) -> Plan: ...


def under(path: str, mountpoint: str) -> bool:
    """Whether a path lies below a mountpoint (by path components, not string prefix)."""
    import posixpath

    mp = posixpath.normpath(mountpoint)
    p = posixpath.normpath(path)
    return mp != "/" and p.startswith(mp.rstrip("/") + "/")
