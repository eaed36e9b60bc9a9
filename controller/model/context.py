"""The one value every reconciler reads: what is, what is wanted, what is remembered, and when.

Reconcilers are pure functions of a Context; what they need from the past (health's cleanup
history) comes in as the ledger's read-only view, never as state of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from controller.model.desired import DesiredState, Vm
from controller.model.index import ClusterIndex

CIRCUIT_WINDOW = 3600.0  # cleanup attempts older than this are forgotten (health's breaker window)


class CleanupHistory(msgspec.Struct, frozen=True, kw_only=True):
    """When each (resource, node) was cleaned up; the ledger records it from applied cleanups."""

    attempts: Mapping[str, tuple[float, ...]] = msgspec.field(default_factory=dict)

    @staticmethod
    def key(rsc: str, node: str) -> str:
        """The one spelling of a (resource, node) key here (it is also how the ledger file
        stores it); nothing parses it back."""
        return f"{rsc}@{node}"

    def of(self, rsc: str, node: str) -> tuple[float, ...]:
        return self.attempts.get(self.key(rsc, node), ())

    def record(self, rsc: str, node: str, at: float) -> CleanupHistory:
        key = self.key(rsc, node)
        recent = tuple(t for t in self.attempts.get(key, ()) if at - t < CIRCUIT_WINDOW)
        return CleanupHistory(attempts={**self.attempts, key: (*recent, at)})


class OutOfBandChange(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle change of a cluster VM that Pacemaker did not make (engine/oob.py)."""

    at: float  # when libvirt reported it (the agent's clock)
    vm: str
    resource: str
    node: str
    what: str  # libvirt's event/detail: stopped/destroyed, suspended/paused, started/migrated...


OUT_OF_BAND_SECONDS = 3600.0  # an out-of-band change stays a finding this long


class LedgerView(msgspec.Struct, frozen=True, kw_only=True):
    """What reconcilers may read of the ledger (engine/ledger.py owns the rest)."""

    cleanups: CleanupHistory = msgspec.field(default_factory=CleanupHistory)
    out_of_band: tuple[OutOfBandChange, ...] = ()
    # when kvm-warden last marked a resource failed on a node ((rsc, node) -> wall clock)
    failed_at: Mapping[tuple[str, str], float] = msgspec.field(default_factory=dict)
    # when an enrollment was rolled back (rsc -> wall clock): not retried at once
    rolled_back: Mapping[str, float] = msgspec.field(default_factory=dict)
    # cluster properties a declared drain changed -> their value before it (None: unset)
    saved_properties: Mapping[str, str | None] = msgspec.field(default_factory=dict)
    # (kind, subject) -> since when a timed finding has been seen on every full pass
    finding_since: Mapping[tuple[str, str], float] = msgspec.field(default_factory=dict)
    # when rebalancing last moved each resource (rsc -> wall clock)
    balanced_at: Mapping[str, float] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """One reconcile pass's input. `scope`: the VM names events made dirty (an incremental
    pass plans just those), or None for a full pass (cluster-wide checks and removals too)."""

    index: ClusterIndex
    desired: DesiredState
    scope: frozenset[str] | None = None
    ledger: LedgerView = field(default_factory=LedgerView)
    now: float = 0.0

    def in_scope(self) -> tuple[Vm, ...]:
        """The file's VMs this pass plans: every one on a full pass, the dirty ones on an
        incremental one (a reconciler never filters by hand)."""
        return tuple(vm for vm in self.desired.vms if self.scope is None or vm.name in self.scope)
