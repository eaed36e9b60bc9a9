"""The Reconciler protocol and the helpers reconcilers share.

A reconciler is a pure function of one Context (index, desired, scope, ledger view, now): no
I/O, no clock, no state of its own; what it needs to remember between passes (health's cleanup
history) comes in through the ledger's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

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
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from controller.model.names import conventional_name
from controller.model.names import did_you_mean as did_you_mean  # re-exported: reconcilers use it
from controller.model.vms import is_vm_agent


@dataclass
class PlanBuilder:
    reconciler: str
    actions: list[AnyAction] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def find(self, kind: FindingKind, severity: Severity, about: Subject, message: str,
             urgent: bool = False, reason: str = "") -> None:
        self.findings.append(Finding(reconciler=self.reconciler, kind=kind, severity=severity,
                                     subject=str(about), rsc=about.rsc, node=about.node,
                                     message=message, urgent=urgent, reason=reason))

    def build(self) -> Plan:
        return Plan(tuple(self.actions), tuple(self.findings))


def remove_stale(out: PlanBuilder, index: ClusterIndex, owned: tuple[str, ...], wanted: set[str],
                 why: str, keep: frozenset[str] = frozenset()) -> list[str]:
    """Plan the removal of this reconciler's own constraints that nothing asks for any more.

    Only ids with the reconciler's own prefixes are candidates: kvm-warden never removes a
    constraint somebody else made (leftover cli-* constraints are handled by placement). One
    that names a resource of `keep` stays -- a VM whose resource still runs in the cluster but
    that the file no longer names (a rename, a typo): safety goes only on positive evidence
    (`state: absent`, or the resource gone). Returns the ids kept so."""
    tables: list[dict[str, tuple[str | None, ...]]] = [
        {cid: (c.rsc,) for cid, c in index.location.items()},
        {cid: (c.then, c.first) for cid, c in index.order.items()},
        {cid: (c.rsc, c.with_rsc) for cid, c in index.colocation.items()},
    ]
    kept: list[str] = []
    for table in tables:
        for cid, rscs in sorted(table.items()):
            if not cid.startswith(owned) or cid in wanted:
                continue
            if keep.intersection(r for r in rscs if r):
                kept.append(cid)
                continue
            out.actions.append(RemoveConstraint(reconciler=out.reconciler, id=cid, rsc=rscs[0],
                                                why=why))
    return kept


def undeclared_vms(index: ClusterIndex, desired: DesiredState) -> dict[str, str]:
    """VirtualDomain resources of the cluster that no VM of the file names: id -> the name the
    `vm-NAME` convention gives it."""
    named = {vm.resource_id for vm in desired.vms}
    return {rid: conventional_name(rid) for rid, cfg in index.configured.items()
            if is_vm_agent(cfg.agent) and rid not in named}


Scope = Literal["vms", "cluster"]


class Cause(NamedTuple):
    """One cause of a finding: its machine reason (CamelCase) and its words."""

    reason: str
    text: str


class Reconciler(Protocol):
    """Every reconciler module: a NAME, the SCOPE it watches and a pure `plan(ctx)`;
    reconcilers.all.ALL lists them. SCOPE "vms": it plans per VM (`ctx.in_scope()`), and an
    incremental pass runs it on the dirty VMs alone; "cluster": it reads the whole cluster,
    and the engine runs it on full passes only."""

    NAME: str
    SCOPE: Scope

    def plan(self, ctx: Context) -> Plan: ...


def under(path: str, mountpoint: str) -> bool:
    """Whether a path lies below a mountpoint (by path components, not string prefix)."""
    import posixpath

    mp = posixpath.normpath(mountpoint)
    p = posixpath.normpath(path)
    return mp != "/" and p.startswith(mp.rstrip("/") + "/")
