"""The guard: admits or refuses each action, with a reason, before anything touches the cluster.

Checks, in order (docs/architecture.md, "The guard"): dry-run; quorum; unclean nodes / fencing; maintenance
mode; the resource unmanaged or in maintenance; stale observation; cooldown per object; rate
limit per action kind; concurrent migrations. The cluster-wide checks come first so that, while
quorum is lost, *every* action is refused with the same reason (and counted as such).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.engine.ledger import Ledger, moves_resource
from controller.model.actions import AnyAction, ResourceAction
from controller.model.desired import Policy
from controller.model.index import ClusterIndex
from controller.model.observed import ResourceConfig
from controller.model.pcmk import HOLD_MARK, to_bool

FRESHNESS_SECONDS = 120.0  # observed state older than this is not acted on
COOLDOWN_SECONDS = 10.0  # one object is changed at most once per cooldown

Reason = Literal[
    "admitted", "dry-run", "no-quorum", "node-unclean", "maintenance-mode", "resource-unmanaged",
    "stale-observation", "cooldown", "rate-limit", "max-concurrent-migrations", "would-disrupt",
    # held, not refused: the scheduler's preview of the patch is still running (engine/preview.py)
    "previewing",
    # held: the patch would move a VM nothing in the desired file asks to move (engine/explain.py)
    "would-move-unasked",
    # held: the state directory has no room for the audit record of a change (engine/audit.py)
    "audit-unwritable",
    # held: a predicted live migration into a host whose QEMU lacks the VM's machine type (it
    # would fail and Pacemaker restart the VM: controller/model/machines.py)
    "machine-type",
    # held: once carried out, a node's failure would leave VMs without room that have room
    # today (capacity.tolerate; engine/capacity.py admission)
    "would-break-failover",
]


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    reason: Reason
    detail: str = ""


ADMIT = Verdict(True, "admitted")


def _held_by_us(action: AnyAction, cfg: ResourceConfig | None) -> bool:
    """kvm-warden's own hold (enrollment, retirement) or an orphan: the steps that end it may
    act on the unmanaged resource; nothing else may."""
    if not isinstance(action, ResourceAction) or not action.on_held:
        return False
    return cfg is None or HOLD_MARK in cfg.meta


@dataclass
class Guard:
    """Cluster-wide safety checks are pure; rates, cooldowns and in-flight moves are read from
    the ledger, which remembers outcomes (engine/ledger.py)."""

    ledger: Ledger = field(default_factory=Ledger)

    def cluster_verdict(
        self, index: ClusterIndex, policy: Policy, now: float, observed_at: float | None
    ) -> Verdict:
        status = index.observed.status
        if policy.dry_run:
            return Verdict(False, "dry-run", "policy.dry_run is on")
        if not status.with_quorum:
            return Verdict(False, "no-quorum", "the cluster partition has no quorum")
        unclean = sorted(n.name for n in status.nodes.values() if n.unclean)
        if unclean:
            return Verdict(False, "node-unclean", f"unclean (fencing pending): {', '.join(unclean)}")
        mm = index.properties.get("maintenance-mode") or status.properties.get("maintenance-mode")
        if to_bool(mm):
            return Verdict(False, "maintenance-mode", "maintenance-mode is on")
        if observed_at is not None and now - observed_at > FRESHNESS_SECONDS:
            return Verdict(False, "stale-observation",
                           f"observed {now - observed_at:.0f} s ago (bound {FRESHNESS_SECONDS:.0f} s)")
        return ADMIT

    def admit(
        self, action: AnyAction, index: ClusterIndex, policy: Policy, now: float,
        observed_at: float | None = None,
    ) -> Verdict:
        cluster = self.cluster_verdict(index, policy, now, observed_at)
        if not cluster.admitted:
            return cluster
        rsc = action.resource
        if rsc is not None:
            cfg = index.configured.get(rsc)
            parent = cfg.parent if cfg is not None else None
            if (rsc in index.unmanaged or (parent is not None and parent in index.unmanaged)) \
                    and not _held_by_us(action, cfg):
                return Verdict(False, "resource-unmanaged", f"{rsc} is unmanaged or in maintenance")
            node = getattr(action, "node", None)
            n = index.nodes.get(node) if isinstance(node, str) else None
            if n is not None and n.maintenance:
                return Verdict(False, "resource-unmanaged", f"node {node} is in maintenance")
        last = self.ledger.last_change.get(action.key)
        if last is not None and now - last < COOLDOWN_SECONDS:
            return Verdict(False, "cooldown", f"{action.key} changed {now - last:.1f} s ago")
        kind = type(action).__name__
        spent = self.ledger.actions_in_window(kind, now)
        if spent >= policy.max_actions_per_minute:
            return Verdict(False, "rate-limit",
                           f"{spent} {kind} actions in the last minute "
                           f"(max {policy.max_actions_per_minute})")
        moved = moves_resource(action, index)
        if moved is not None and moved not in self.ledger.moves:
            in_flight = self.ledger.migrations_in_flight(index, now)
            if len(in_flight) >= policy.max_concurrent_migrations:
                return Verdict(False, "max-concurrent-migrations",
                               f"{len(in_flight)} migrations in flight: {', '.join(sorted(in_flight))}")
        return ADMIT
