"""The reconcile loop: observe -> decide (reconcilers + guard) -> apply -> record outcomes.

Level-triggered: every pass plans on the whole observed state held in the store; events only
mark objects dirty and wake the loop early, debounced. A full pass reads Pacemaker (crm_mon);
a burst of libvirt events gives an incremental pass over just the VMs they touched, on the
Pacemaker reading the store already holds. An epoch conflict re-reads and re-plans at once;
it never overwrites.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller import metrics
from controller.actuators.pacemaker import CibConflict, PacemakerActuator
from controller.engine.audit import AuditLog, records
from controller.engine.decide import Decision, decide
from controller.engine.desired_store import DesiredStore
from controller.engine.guard import Guard
from controller.engine.history import Event, History
from controller.engine.ledger import Ledger, LedgerFile
from controller.engine.observe import CONTROLLER, Source
from controller.engine.preview import Preview, gate, needs_preview, preview
from controller.engine.store import Store
from controller.logs import logger
from controller.model.actions import (
    CIB_ACTIONS,
    AddColocation,
    AddOrder,
    Finding,
    Outcome,
    describe,
)
from controller.model.context import Context, OutOfBandChange
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import ObservedState
from controller.model.overview import VmRow, vm_rows
from controller.model.vms import cluster_vms, vm_names
from reconcilers import paused

DEBOUNCE_SECONDS = 0.2
# Alerts ask for a full pass (crm_mon); a storm of them (real or forged) gets at most one per
# this many seconds -- what they signal is in the next crm_mon anyway.
MIN_FULL_PASS_SECONDS = 2.0
LOOP_STALL_SECONDS = 600.0


@dataclass(frozen=True)
class PassResult:
    decisions: tuple[Decision, ...]
    findings: tuple[Finding, ...]
    outcomes: tuple[Outcome, ...] = ()
    conflict: bool = False
    error: str | None = None
    duration: float = 0.0
    scope: str = "full"
    finished_at: float = 0.0  # wall clock, for /readyz and the "not reconciling" alert

    @property
    def pending(self) -> bool:
        return bool(self.decisions)


@dataclass
class Controller:
    source: Source
    actuator: PacemakerActuator
    desired: DesiredStore
    store: Store = field(default_factory=Store)
    after_apply: Callable[[], None] | None = None  # the simulated cluster "reacts" here
    guard: Guard = field(default_factory=Guard)
    ledger_file: LedgerFile | None = None  # the ledger survives restarts and failover here
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))  # the log only, by default
    _refusals: set[tuple[str, str]] = field(default_factory=set)
    last_preview: Preview | None = None
    last: PassResult | None = None
    last_observed: ObservedState | None = None
    last_rows: tuple[VmRow, ...] = ()
    cib: bytes | None = None  # the CIB of the last full reading: the base of the next patch
    _dirty: set[str] = field(default_factory=set)
    _recheck_at: float | None = None  # wall clock: a grace (a paused VM's) ends then
    _out_of_band: list[OutOfBandChange] = field(default_factory=list)  # the watcher's inbox
    history: History | None = None  # what happened to every VM (engine/history.py)
    # Every cluster VM, listed in the file or not (model/vms.py), as of the last pass: libvirt
    # domain name -> resource id, and resource id -> VM name. Replaced whole, read by other
    # threads (the out-of-band watcher, the history tap).
    vms: dict[str, str] = field(default_factory=dict)
    vm_names: dict[str, str] = field(default_factory=dict)
    # crm_mon shows an operation in flight (the out-of-band watcher wants to see it pending)
    on_transition: Callable[[], None] | None = None
    _full: bool = True
    _urgent: bool = False  # a full pass our own change asked for: not rate-limited
    _dirty_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.log = logger(component="loop")
        if self.ledger_file is not None:
            self.guard = Guard(self.ledger_file.load())
        # Events only wake the loop (debounced); the pass re-reads everything (level-triggered).
        self.store.listeners.append(self.mark)

    @property
    def ledger(self) -> Ledger:
        return self.guard.ledger

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

    def out_of_band(self, change: OutOfBandChange) -> None:
        """The out-of-band watcher found one (its thread): into the ledger at the next pass,
        which is a full one now, so that status shows the finding at once."""
        with self._dirty_lock:
            self._out_of_band.append(change)
            self._full = self._urgent = True
        self._wake.set()
        if self.history is not None:
            self.history.add([Event(at=change.at, kind="out_of_band", vm=change.vm,
                                    node=change.node, detail=change.what)])

    def _take_dirty(self) -> tuple[bool, bool, frozenset[str]]:
        with self._dirty_lock:
            full, urgent, dirty = self._full, self._urgent, frozenset(self._dirty)
            self._full, self._urgent, self._dirty = False, False, set()
        return full, urgent, dirty

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- one pass ----------------------------------------------------------------------------
    def run_pass(self, now: float | None = None, only: frozenset[str] | None = None
                 ) -> PassResult:
        """One pass. `only`: VM names dirtied by libvirt events -- plan just those, on the
        Pacemaker reading the store holds (no crm_mon run)."""
        started = time.monotonic()
        desired = self.desired.current
        if desired is None:
            return self._finish(PassResult((), (), error="no valid desired state"), started)
        if only is None or self.cib is None:
            only = None
            error = self._read()
            if error is not None:
                return self._finish(PassResult((), (), error=error), started)
        observed = self.store.state
        self.last_observed = observed
        metrics.update_cluster(observed)
        t = now if now is not None else time.time()
        with self._dirty_lock:
            seen, self._out_of_band = self._out_of_band, []
        self.ledger.saw_out_of_band(seen, t)
        index = build_index(observed)
        if only is None:  # which VMs exist changes with the CIB or the file: full passes only
            self.vms = cluster_vms(index, desired)
            self.vm_names = vm_names(self.vms)
        if only is None and self.on_transition is not None and (
                index.transitioning or index.migrating):
            self.on_transition()
        # Freshness is that of Pacemaker's view, which every action is planned on; a dead
        # node's silent agent is the stale list's business, not a reason to freeze.
        observed_at = observed.observed_at.get("pacemaker", t)
        decisions, findings = decide(index, desired, self.guard, t, observed_at, only)
        decisions = self._preview(decisions, index, desired)
        findings = self.ledger.persistent(findings, t, prune=only is None)
        if only is not None and self.last is not None:
            # An incremental pass checked only its VMs: the others' findings still stand.
            mine = {rid for name, rid in self.vms.items() if name in only}
            findings = tuple(f for f in self.last.findings
                             if f.subject.split("@", 1)[0] not in mine) + findings
        self._recheck_at = paused.due_at(Context(index=index, desired=desired, now=t))
        self.last_rows = vm_rows(observed, desired)  # /status serves these until the next pass
        self._report(decisions, findings, index.fail_counts)
        outcomes, conflict, error = self._apply(decisions, index, t)
        self._audit(decisions, outcomes, error, full=only is None)
        if self.history is not None:
            self.history.retention_days = desired.history.retention_days
            self.history.observe_pass(index, self.vm_names, findings, outcomes, t,
                                      full=only is None)
        return self._finish(
            PassResult(decisions, findings, tuple(outcomes), conflict,
                       scope="full" if only is None else "incremental"), started)

    def _preview(self, decisions: tuple[Decision, ...], index: ClusterIndex,
                 desired: DesiredState) -> tuple[Decision, ...]:
        """The disruption gate, for passes whose patch could move VMs (engine/preview.py)."""
        if self.cib is None or not needs_preview(decisions):
            return decisions
        cib_actions = [d.action for d in decisions if d.verdict.admitted
                       and isinstance(d.action, CIB_ACTIONS)]
        pv = preview(self.cib, cib_actions, desired.policy.preview_timeout_seconds)
        self.last_preview = pv
        metrics.PREVIEW_DURATION.observe(pv.seconds)
        if pv.error is not None:
            self.log.warning("preview_failed", error=pv.error)
        return gate(decisions, pv, index, desired, desired.policy.allow_disruption)

    def _read(self) -> str | None:
        try:
            reading = self.source()
        except WardenError as exc:
            metrics.PROBE_ERRORS.labels(probe="pacemaker").inc()
            self.log.error("observe_failed", error=str(exc))
            return str(exc)
        self.store.observe(reading.observations, CONTROLLER, reading.at)
        self.cib = reading.cib
        return None

    def _report(self, decisions: tuple[Decision, ...], findings: tuple[Finding, ...],
                fail_counts: Mapping[tuple[str, str], int]) -> None:
        metrics.update_vms(self.last_rows, fail_counts)
        metrics.STORAGE_DEPS_MISSING.set(sum(
            1 for d in decisions if d.action.reconciler == "storage"
            and isinstance(d.action, AddOrder | AddColocation)))
        for d in decisions:
            metrics.ACTIONS.labels(kind=type(d.action).__name__, verdict=d.verdict.reason).inc()
            if not d.verdict.admitted:
                metrics.GUARD_REFUSALS.labels(reason=d.verdict.reason).inc()
            self.log.info("decision", action=describe(d.action), reconciler=d.action.reconciler,
                          why=d.action.why, verdict=d.verdict.reason, detail=d.verdict.detail)
        for f in findings:
            self.log.warning("finding", reconciler=f.reconciler, kind=f.kind,
                             severity=f.severity, subject=f.subject, message=f.message)
        metrics.update_findings(findings)

    def _audit(self, decisions: tuple[Decision, ...], outcomes: list[Outcome],
               error: str | None, full: bool) -> None:
        """One record per change sent, and per refusal when it starts (not every pass)."""
        refusals: set[tuple[str, str]] = {
            (d.action.key, d.verdict.reason) for d in decisions if not d.verdict.admitted}
        fresh = tuple(d for d in decisions if d.verdict.admitted
                      or (d.action.key, d.verdict.reason) not in self._refusals)
        self._refusals = refusals if full else self._refusals | refusals
        self.audit.write(records(fresh, outcomes, "service", error))

    def _apply(self, decisions: tuple[Decision, ...], index: ClusterIndex, now: float
               ) -> tuple[list[Outcome], bool, str | None]:
        admitted = [d.action for d in decisions if d.verdict.admitted]
        if not admitted:
            return [], False, None
        outcomes: list[Outcome] = []
        conflict, error = False, None
        try:
            outcomes = self.actuator.apply(admitted, cib=self.cib)
        except CibConflict as exc:
            conflict, error = True, f"not applied, the CIB changed meanwhile: {exc}"
            metrics.CIB_CONFLICTS.inc()
            self.log.warning("cib_conflict", error=str(exc))
            self._full = self._urgent = True
            self._wake.set()  # re-read and re-plan at once
        except WardenError as exc:
            error = str(exc)
            metrics.ACTUATOR_ERRORS.inc()
            self.log.error("apply_failed", error=str(exc))
        for o in outcomes:
            self.ledger.record(o.action, o.applied, index, now)
            metrics.APPLIED.labels(kind=type(o.action).__name__,
                                   outcome="applied" if o.applied else "failed").inc()
        if any(o.applied for o in outcomes):
            if self.after_apply:
                self.after_apply()
            self._full = self._urgent = True
            self._wake.set()  # re-observe soon: the next pass sees what the change did
        return outcomes, conflict, error

    def _finish(self, result: PassResult, started: float) -> PassResult:
        duration = time.monotonic() - started
        finished = time.time()
        result = PassResult(result.decisions, result.findings, result.outcomes, result.conflict,
                            result.error, duration, result.scope, finished)
        metrics.PASSES.labels(result="error" if result.error else "ok", scope=result.scope).inc()
        metrics.PASS_DURATION.observe(duration)
        if result.error is None:  # "not reconciling" must fire while crm_mon keeps failing
            metrics.LAST_PASS.set(finished)
        metrics.DRIFT.clear()
        for d in result.decisions:
            metrics.DRIFT.labels(reconciler=d.action.reconciler).inc()
        self.last = result
        if self.ledger_file is not None:
            self.ledger_file.save(self.ledger, finished)
        return result

    # -- the loop ----------------------------------------------------------------------------
    def run_forever(self, passes: int = 0, on_pass: Callable[[PassResult], None] | None = None
                    ) -> None:
        """Pass on start, on every wake (debounced) and every resync period, until stop()."""
        me = threading.current_thread()
        # A pass can take minutes at worst (crm_mon's and the patch's timeouts, retries); longer
        # than this without coming round, the loop is stuck and /healthz says so.
        metrics.watch_thread(me, stall_after=LOOP_STALL_SECONDS)
        try:
            self._loop(passes, on_pass, me.name)
        finally:
            metrics.forget_thread(me)

    def _loop(self, passes: int, on_pass: Callable[[PassResult], None] | None, me: str) -> None:
        done = 0
        next_resync = 0.0
        last_full = float("-inf")
        while not self._stop.is_set():
            metrics.beat(me)
            if self._recheck_at is not None and time.time() >= self._recheck_at:
                self._recheck_at = None
                with self._dirty_lock:  # a grace has ended: a full pass now
                    self._full = self._urgent = True
                self._wake.set()
            changed = self.desired.poll()
            now = time.monotonic()
            if changed or self._wake.is_set() or now >= next_resync:
                self._wake.clear()
                full, urgent, dirty = self._take_dirty()
                domains = frozenset(k.split(":", 1)[1] for k in dirty if k.startswith("domain:"))
                if full and not (urgent or changed or now >= next_resync or self.cib is None) \
                        and now - last_full < MIN_FULL_PASS_SECONDS:
                    with self._dirty_lock:  # not yet: keep what the events asked for
                        self._full = True
                        self._dirty |= dirty
                    self._stop.wait(MIN_FULL_PASS_SECONDS - (now - last_full))
                    self._wake.set()
                    continue
                if full or changed or now >= next_resync or self.cib is None:
                    last_full = time.monotonic()
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
