"""The reconcile pass and loop: observe -> plan (all reconcilers) -> guard -> apply -> audit.

This module is the one place that wires probes, reconcilers, the guard and the actuators.
Level-triggered: every pass reads the whole observed state; events (later: the bus) only wake
the loop early, debounced. An epoch conflict re-reads and re-plans at once; it never overwrites.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import metrics
from controller.actuators.pacemaker import CibConflict, Outcome, PacemakerActuator
from controller.app.status import vm_rows
from controller.engine.guard import Guard, Verdict
from controller.logs import logger
from controller.model.actions import AnyAction, Cleanup, Finding, describe
from controller.model.desired import DesiredState, load_desired
from controller.model.errors import DesiredStateError, WardenError
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import ObservedState
from reconcilers.all import plan_all
from reconcilers.health import CleanupHistory

DEBOUNCE_SECONDS = 0.2
# libvirt's events and crm_mon's snapshot are not taken at the same instant: during a start or
# a migration one may show the guest where the other does not yet. A placement mismatch is
# reported only once it has lasted this long (Pacemaker's own monitor interval is seconds).
FINDING_PERSIST_SECONDS = 15.0


@dataclass(frozen=True)
class Decision:
    action: AnyAction
    verdict: Verdict


@dataclass(frozen=True)
class PassResult:
    decisions: tuple[Decision, ...]
    findings: tuple[Finding, ...]
    outcomes: tuple[Outcome, ...] = ()
    conflict: bool = False
    error: str | None = None
    duration: float = 0.0
    scope: str = "full"

    @property
    def pending(self) -> bool:
        return bool(self.decisions)


def decide(
    index: ClusterIndex, desired: DesiredState, guard: Guard, history: CleanupHistory,
    now: float, observed_at: float | None, only: frozenset[str] | None = None,
) -> tuple[tuple[Decision, ...], tuple[Finding, ...]]:
    """Plan with every reconciler and put each action before the guard.

    Admitted actions are recorded at once, so that rate limits and the migration ceiling hold
    within one pass too (five moves with max_concurrent_migrations=2: two admitted, three not).
    """
    plan = plan_all(index, desired, history, now, only=only)
    decisions = []
    for action in plan.actions:
        verdict = guard.admit(action, index, desired.policy, now, observed_at)
        if verdict.admitted:
            guard.record(action, index, now)
        decisions.append(Decision(action, verdict))
    return tuple(decisions), plan.findings


class DesiredStore:
    """The desired-state file with hot reload; an invalid file never replaces the last good one."""

    def __init__(self, path: str | None, fallback: DesiredState | None = None):
        self.path = path
        self.current: DesiredState | None = fallback
        self.errors: tuple[str, ...] = ()
        self.generation = 0
        self._stamp: tuple[float, int] | None = None
        self.log = logger(component="desired")

    def poll(self) -> bool:
        """Reload if the file changed on disk; True when a new valid state took effect."""
        if self.path is None:
            if self.generation == 0 and self.current is not None:
                self.generation = 1
                metrics.DESIRED_VALID.set(1)
                metrics.DESIRED_GENERATION.set(1)
                return True
            return False
        try:
            st = Path(self.path).stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError as exc:
            stamp = (0.0, -1)
            if stamp != self._stamp:
                self._stamp = stamp
                self._reject((f"{self.path}: cannot read: {exc.strerror}",))
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            new = load_desired(self.path)
        except DesiredStateError as exc:
            self._reject(exc.problems)
            return False
        self.current = new
        self.errors = ()
        self.generation += 1
        metrics.DESIRED_VALID.set(1)
        metrics.DESIRED_GENERATION.set(self.generation)
        metrics.DESIRED_RELOAD_TIME.set(time.time())
        self.log.info("desired_state_loaded", path=self.path, generation=self.generation,
                      vms=len(new.vms))
        return True

    def _reject(self, problems: tuple[str, ...]) -> None:
        self.errors = problems
        metrics.DESIRED_VALID.set(0)
        self.log.error("desired_state_rejected", path=self.path, problems=list(problems),
                       kept_generation=self.generation)


Observe = Callable[[], tuple[ObservedState, bytes | None]]


@dataclass
class Controller:
    observe: Observe
    actuator: PacemakerActuator
    desired: DesiredStore
    after_apply: Callable[[], None] | None = None  # the simulated cluster "reacts" here
    # Merges the latest bus state (libvirt, corosync, mounts) into a held observation: lets a
    # burst of libvirt events be planned without running crm_mon again (DESIGN.md section 2).
    refresh: Callable[[ObservedState], ObservedState] | None = None
    guard: Guard = field(default_factory=Guard)
    history: CleanupHistory = field(default_factory=CleanupHistory)
    last: PassResult | None = None
    last_observed: ObservedState | None = None
    last_rows: list[dict[str, Any]] = field(default_factory=list)
    last_raw: bytes | None = None
    _finding_since: dict[tuple[str, str], float] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _full: bool = True
    _dirty_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.log = logger(component="loop")

    def wake(self) -> None:
        self._wake.set()

    def mark(self, changed: frozenset[str]) -> None:
        """Objects an event changed (the store's change keys): the next pass's dirty set."""
        with self._dirty_lock:
            self._dirty |= changed
            # Alerts mean Pacemaker acted: only crm_mon tells what it did. Quorum and mounts
            # change what the guard and storage see cluster-wide.
            if any(k.startswith(("alert:", "quorum:", "mounts:")) for k in changed):
                self._full = True
        self._wake.set()

    def _take_dirty(self) -> tuple[bool, frozenset[str]]:
        with self._dirty_lock:
            full, dirty = self._full, frozenset(self._dirty)
            self._full, self._dirty = False, set()
        return full, dirty

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run_pass(self, now: float | None = None, only: frozenset[str] | None = None
                 ) -> PassResult:
        """One pass. `only`: VM names dirtied by libvirt events -- plan just those, on the
        held crm_mon observation refreshed with the bus state (no crm_mon run)."""
        started = time.monotonic()
        desired = self.desired.current
        if desired is None:
            return self._finish(PassResult((), (), error="no valid desired state"), started)
        if only is not None and self.last_observed is not None and self.refresh is not None:
            observed, raw = self.refresh(self.last_observed), self.last_raw
        else:
            only = None
            try:
                observed, raw = self.observe()
            except WardenError as exc:
                metrics.PROBE_ERRORS.labels(probe="pacemaker").inc()
                self.log.error("observe_failed", error=str(exc))
                return self._finish(PassResult((), (), error=str(exc)), started)
        self.last_observed, self.last_raw = observed, raw
        metrics.update_cluster(observed)
        t = now if now is not None else time.time()
        index = build_index(observed)
        # Freshness is that of Pacemaker's view, which every action is planned on; a dead
        # node's silent agent is the stale list's business, not a reason to freeze.
        observed_at = observed.observed_at.get("pacemaker", t)
        decisions, findings = decide(index, desired, self.guard, self.history, t, observed_at,
                                     only)
        findings = self._persistent(findings, t, prune=only is None)
        self.last_rows = vm_rows(observed, desired)  # /status serves these until the next pass
        metrics.update_vms(self.last_rows, index.fail_counts)
        metrics.STORAGE_DEPS_MISSING.set(sum(
            1 for d in decisions if d.action.reconciler == "storage"
            and type(d.action).__name__ in ("AddOrder", "AddColocation")))
        for d in decisions:
            metrics.ACTIONS.labels(kind=type(d.action).__name__, verdict=d.verdict.reason).inc()
            if not d.verdict.admitted:
                metrics.GUARD_REFUSALS.labels(reason=d.verdict.reason).inc()
            self.log.info("decision", action=describe(d.action), reconciler=d.action.reconciler,
                          why=d.action.why, verdict=d.verdict.reason, detail=d.verdict.detail)
        for f in findings:
            self.log.warning("finding", reconciler=f.reconciler, severity=f.severity,
                             subject=f.subject, message=f.message)
        metrics.update_findings(findings)
        admitted = [d.action for d in decisions if d.verdict.admitted]
        outcomes: list[Outcome] = []
        conflict = False
        if admitted:
            try:
                outcomes = self.actuator.apply(admitted, cib=raw)
            except CibConflict as exc:
                conflict = True
                metrics.CIB_CONFLICTS.inc()
                self.log.warning("cib_conflict", error=str(exc))
                self._full = True
                self._wake.set()  # re-read and re-plan at once
            except WardenError as exc:
                metrics.ACTUATOR_ERRORS.inc()
                self.log.error("apply_failed", error=str(exc))
            for o in outcomes:
                self._audit(o)
                if o.applied and isinstance(o.action, Cleanup):
                    self.history = self.history.record(o.action.rsc, o.action.node, t)
            if any(o.applied for o in outcomes):
                if self.after_apply:
                    self.after_apply()
                self._full = True
                self._wake.set()  # re-observe soon: the next pass sees what the change did
        return self._finish(
            PassResult(decisions, findings, tuple(outcomes), conflict,
                       scope="full" if only is None else "incremental"), started)

    def _persistent(self, findings: tuple[Finding, ...], now: float, prune: bool = True
                    ) -> tuple[Finding, ...]:
        """Drop placement findings (health, critical) younger than FINDING_PERSIST_SECONDS."""
        keep, seen = [], set()
        for f in findings:
            if f.reconciler != "health" or f.message.startswith("circuit open"):
                keep.append(f)
                continue
            key = (f.subject, f.message)
            seen.add(key)
            first = self._finding_since.setdefault(key, now)
            if now - first >= FINDING_PERSIST_SECONDS:
                keep.append(f)
        if prune:  # an incremental pass sees only its VMs: it cannot clear the others
            self._finding_since = {k: v for k, v in self._finding_since.items() if k in seen}
        return tuple(keep)

    def _audit(self, o: Outcome) -> None:
        metrics.APPLIED.labels(kind=type(o.action).__name__,
                               outcome="applied" if o.applied else "failed").inc()
        record: dict[str, Any] = {
            "action": describe(o.action), "kind": type(o.action).__name__,
            "reconciler": o.action.reconciler, "why": o.action.why, "before": o.before,
            "after": o.after, "outcome": "applied" if o.applied else "failed",
            "duration_s": round(o.duration, 4),
        }
        if o.error:
            record["error"] = o.error
        self.log.info("audit", **record)

    def _finish(self, result: PassResult, started: float) -> PassResult:
        duration = time.monotonic() - started
        result = PassResult(result.decisions, result.findings, result.outcomes, result.conflict,
                            result.error, duration, result.scope)
        metrics.PASSES.labels(result="error" if result.error else "ok", scope=result.scope).inc()
        metrics.PASS_DURATION.observe(duration)
        metrics.LAST_PASS.set(time.time())
        metrics.DRIFT.clear()
        for d in result.decisions:
            metrics.DRIFT.labels(reconciler=d.action.reconciler).inc()
        self.last = result
        return result

    def run_forever(self, passes: int = 0, on_pass: Callable[[PassResult], None] | None = None
                    ) -> None:
        """Pass on start, on every wake (debounced) and every resync period, until stop()."""
        done = 0
        next_resync = 0.0
        while not self._stop.is_set():
            changed = self.desired.poll()
            now = time.monotonic()
            if changed or self._wake.is_set() or now >= next_resync:
                self._wake.clear()
                full, dirty = self._take_dirty()
                domains = frozenset(k.split(":", 1)[1] for k in dirty if k.startswith("domain:"))
                if full or changed or now >= next_resync or self.last_observed is None:
                    result = self.run_pass()
                    period = (self.desired.current.policy.resync_seconds
                              if self.desired.current else 30)
                    next_resync = time.monotonic() + period
                elif domains:
                    result = self.run_pass(only=domains)
                else:
                    continue
                if on_pass:
                    on_pass(result)
                done += 1
                if passes and done >= passes:
                    return
            if self._wake.wait(timeout=1.0):  # also polls the desired file once a second
                time.sleep(DEBOUNCE_SECONDS)  # a burst of events becomes one pass
