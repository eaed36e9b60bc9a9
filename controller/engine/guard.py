"""The guard: admits or refuses each action, with a reason, before anything touches the cluster.

Checks, in order (DESIGN.md section 6): dry-run; quorum; unclean nodes / fencing; maintenance
mode; the resource unmanaged or in maintenance; stale observation; cooldown per object; rate
limit per action kind; concurrent migrations. The cluster-wide checks come first so that, while
quorum is lost, *every* action is refused with the same reason (and counted as such).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from controller.model.actions import (
    AddColocation,
    AnyAction,
    RemoveConstraint,
    SetAllowedNodes,
    SetLocation,
)
from controller.model.desired import Policy
from controller.model.index import ClusterIndex

FRESHNESS_SECONDS = 120.0  # observed state older than this is not acted on
COOLDOWN_SECONDS = 10.0  # one object is changed at most once per cooldown
MIGRATION_SETTLE_SECONDS = 300.0  # a move we caused counts as in flight until crm_mon settles

REASONS = (
    "admitted", "dry-run", "no-quorum", "node-unclean", "maintenance-mode", "resource-unmanaged",
    "stale-observation", "cooldown", "rate-limit", "max-concurrent-migrations",
)


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    reason: str
    detail: str = ""


ADMIT = Verdict(True, "admitted")


def moves_resource(action: AnyAction, index: ClusterIndex) -> str | None:
    """The VM this action would make Pacemaker (live-)migrate, if any."""
    match action:
        case SetLocation(rsc=r, node=n, score=s):
            here = index.running.get(r, ())
            return r if here and n not in here and not s.startswith("-") else None
        case SetAllowedNodes(rsc=r, nodes=ns):
            here = index.running.get(r, ())
            return r if any(h not in ns for h in here) else None
        case AddColocation(rsc=r, with_rsc=w, score=s) if s.startswith("-"):
            shared = set(index.running.get(r, ())) & set(index.running.get(w, ()))
            return r if shared else None
        case RemoveConstraint(id=i, rsc=r) if r and i.startswith(("cli-", "warden-prefer-")):
            return r if r in index.running else None
    return None


@dataclass
class Guard:
    """Cluster-wide safety checks are pure; rates, cooldowns and in-flight moves are remembered."""

    clock: float = 0.0
    _by_kind: dict[str, deque[float]] = field(default_factory=dict)
    _last_change: dict[str, float] = field(default_factory=dict)
    _moves: dict[str, float] = field(default_factory=dict)

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
        if (mm or "false").lower() in ("true", "yes", "on", "1"):
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
            if rsc in index.unmanaged or (parent is not None and parent in index.unmanaged):
                return Verdict(False, "resource-unmanaged", f"{rsc} is unmanaged or in maintenance")
            node = getattr(action, "node", None)
            n = index.nodes.get(node) if isinstance(node, str) else None
            if n is not None and n.maintenance:
                return Verdict(False, "resource-unmanaged", f"node {node} is in maintenance")
        last = self._last_change.get(action.key)
        if last is not None and now - last < COOLDOWN_SECONDS:
            return Verdict(False, "cooldown", f"{action.key} changed {now - last:.1f} s ago")
        kind = type(action).__name__
        window = self._by_kind.get(kind)
        if window is not None:
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= policy.max_actions_per_minute:
                return Verdict(False, "rate-limit",
                               f"{len(window)} {kind} actions in the last minute "
                               f"(max {policy.max_actions_per_minute})")
        moved = moves_resource(action, index)
        if moved is not None and moved not in self._moves:
            in_flight = self.migrations_in_flight(index, now)
            if len(in_flight) >= policy.max_concurrent_migrations:
                return Verdict(False, "max-concurrent-migrations",
                               f"{len(in_flight)} migrations in flight: {', '.join(sorted(in_flight))}")
        return ADMIT

    def migrations_in_flight(self, index: ClusterIndex, now: float) -> set[str]:
        # A move counts until crm_mon shows it settled: not migrating and running on one node.
        for rsc, since in list(self._moves.items()):
            settled = rsc not in index.migrating and len(index.running.get(rsc, ())) == 1
            if (settled and now - since > 1.0) or now - since > MIGRATION_SETTLE_SECONDS:
                del self._moves[rsc]
        return set(self._moves) | set(index.migrating)

    def record(self, action: AnyAction, index: ClusterIndex, now: float) -> None:
        """Called for each action that was applied: spends its rate and starts its cooldown."""
        self._last_change[action.key] = now
        self._by_kind.setdefault(type(action).__name__, deque()).append(now)
        moved = moves_resource(action, index)
        if moved is not None:
            self._moves[moved] = now


def now() -> float:
    return time.time()
