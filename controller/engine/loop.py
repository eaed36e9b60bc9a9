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
from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.audit import AuditLog, PassAudit
from controller.engine.capacity import FailoverChecker
from controller.engine.decide import Decision
from controller.engine.desired_store import DesiredStore, invalid_finding
from controller.engine.history import Event, History
from controller.engine.ledger import Ledger, LedgerFile
from controller.engine.observe import CONTROLLER, Source
from controller.engine.pipeline import (
    DriftItem,
    PassEffects,
    PassInput,
    PassOutput,
    drift,
    drift_by_resource,
    reconcile,
)
from controller.engine.preview import LOCAL, InlinePreviewer, Preview, Previewer, Simulator
from controller.engine.scheduler import Scheduler
from controller.engine.store import Store
from controller.logs import logger
from controller.model import balance
from controller.model.actions import AddColocation, AddOrder, Finding, Outcome, describe
from controller.model.context import OutOfBandChange
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.events import Dirty
from controller.model.index import ClusterIndex
from controller.model.observed import ObservedState, SourceKey
from controller.model.overview import VmRow, vm_rows
from controller.model.upgrade import progress as upgrade_progress
from controller.model.vms import cluster_vms, vm_names
from reconcilers import storage

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


@dataclass(frozen=True)
class Published:
    """What the last pass saw and did, replaced whole after each pass: the web view, the
    console, /status and the watchers read it from their own threads without a lock."""

    last: PassResult | None = None
    observed: ObservedState | None = None
    rows: tuple[VmRow, ...] = ()
    # Every cluster VM, listed in the file or not (model/vms.py): libvirt domain name ->
    # resource id, and resource id -> VM name.
    vms: Mapping[str, str] = field(default_factory=dict)
    vm_names: Mapping[str, str] = field(default_factory=dict)
    preview: Preview | None = None
    index: ClusterIndex | None = None  # the last full reading's index (the VM page's storage)


@dataclass
class Controller:
    source: Source
    actuator: PacemakerActuator
    desired: DesiredStore
    store: Store = field(default_factory=Store)
    after_apply: Callable[[], None] | None = None  # the simulated cluster "reacts" here
    ledger_file: LedgerFile | None = None  # the ledger survives restarts and failover here
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))  # the log only, by default
    history: History | None = None  # what happened to every VM (engine/history.py)
    # The preview of each patch; by default computed inline on the CIB as it is now. The
    # service uses a BackgroundPreviewer so its passes go on while the scheduler runs.
    previewer: Previewer | None = None
    # Whose scheduler previews (engine/preview.py): this node's, or while a cluster is mixed a
    # node of the DC's version through its agent (the service's, app/schedulers.py).
    simulator: Callable[[], Simulator] = lambda: LOCAL
    # crm_mon shows an operation in flight (the out-of-band watcher wants to see it pending)
    on_transition: Callable[[], None] | None = None
    ledger: Ledger = field(default_factory=Ledger)
    view: Published = field(default_factory=Published)
    cib: bytes | None = None  # the CIB of the last full reading: the base of the next patch
    scheduler: Scheduler = field(default_factory=Scheduler)
    _out_of_band: list[OutOfBandChange] = field(default_factory=list)  # the watcher's inbox
    _inbox_lock: threading.Lock = field(default_factory=threading.Lock)
    _drift: dict[str, DriftItem] = field(default_factory=dict)  # subject -> the verdict
    _logged: frozenset[tuple[str, str, str]] = frozenset()  # the findings said in the log
    _stop: threading.Event = field(default_factory=threading.Event)
    failover: FailoverChecker | None = None  # N+1 beside the loop (the service's)

    def __post_init__(self) -> None:
        self.log = logger(component="loop")
        if self.ledger_file is not None:
            self.ledger = self.ledger_file.load()
        if self.previewer is None:
            self.previewer = InlinePreviewer(self.current_cib, simulator=self.simulator)
        self._audit = PassAudit(self.audit, "service", dedupe=True)
        # Events only wake the loop (debounced); the pass re-reads everything (level-triggered).
        self.store.listeners.append(self.mark)

    @property
    def drift(self) -> tuple[DriftItem, ...]:
        """Every object not as the file wants it (engine/pipeline.drift), as of the last pass."""
        return tuple(self._drift.values())

    # The last pass's view, by name (what the faces read).
    @property
    def last(self) -> PassResult | None:
        return self.view.last

    @property
    def last_observed(self) -> ObservedState | None:
        return self.view.observed

    @property
    def last_rows(self) -> tuple[VmRow, ...]:
        return self.view.rows

    @property
    def vms(self) -> Mapping[str, str]:
        return self.view.vms

    @property
    def vm_names(self) -> Mapping[str, str]:
        return self.view.vm_names

    def current_cib(self) -> bytes:
        """The CIB as it is now, status included (the preview judges this, not the reading
        cached since the last configuration change)."""
        if self.actuator is not None:
            return self.actuator.query()
        if self.cib is None:
            raise WardenError("no CIB read yet")
        return self.cib

    def wake(self) -> None:
        self.scheduler.wake.set()

    def mark(self, changed: frozenset[Dirty]) -> None:
        """Objects an event changed (the store's change keys): the next pass's dirty set.
        Alerts mean Pacemaker acted: only crm_mon tells what it did. Quorum and mounts change
        what the guard and storage see cluster-wide: a full pass."""
        self.scheduler.mark(changed, full=any(d.kind != "domain" for d in changed))

    def preview_ready(self) -> None:
        """The background preview finished: plan again now, to use it."""
        self.scheduler.urgent()

    def out_of_band(self, change: OutOfBandChange) -> None:
        """The out-of-band watcher found one (its thread): into the ledger at the next pass,
        which is a full one now, so that status shows the finding at once."""
        with self._inbox_lock:
            self._out_of_band.append(change)
        self.scheduler.urgent()
        if self.history is not None:
            self.history.add([Event(at=change.at, kind="out_of_band", vm=change.vm,
                                    node=change.node, detail=change.what)])

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.wake.set()

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
        metrics.update_cluster(observed)
        t = now if now is not None else time.time()
        with self._inbox_lock:
            seen, self._out_of_band = self._out_of_band, []
        self.ledger.saw_out_of_band(seen, t)
        # Freshness is that of Pacemaker's view, which every action is planned on; a dead
        # node's silent agent is the stale list's business, not a reason to freeze.
        observed_at = observed.observed_at.get(SourceKey("pacemaker"), t)
        inp = PassInput(observed, desired, t, observed_at, self.cib, only)
        index = inp.index
        vms, names = self.view.vms, self.view.vm_names
        if only is None:  # which VMs exist changes with the CIB or the file: full passes only
            vms = cluster_vms(index, desired)
            names = vm_names(vms)
        if only is None and self.on_transition is not None and (
                index.transitioning or index.migrating):
            self.on_transition()
        assert self.previewer is not None
        out = reconcile(inp,
                       PassEffects(self.ledger, self.previewer, self._audit, self.actuator,
                                   keep_timers=True))
        findings = self._findings(out, index, desired, only, vms)
        self.scheduler.requeue(out.requeue_at)
        self._update_drift(out, findings, only, vms)
        last = self.view.last
        rows = vm_rows(observed, desired, findings, index.fail_counts,
                       drift_by_resource(self._drift))
        self.view = Published(last, observed, rows, vms, names,
                              out.preview if out.preview is not None else self.view.preview,
                              index)
        self._report(out, findings, index.fail_counts, full=only is None)
        if only is None:
            metrics.update_upgrade(upgrade_progress(desired, index))
        self._after(out)
        if self.history is not None:
            self.history.retention_days = desired.history.retention_days
            self.history.observe_pass(index, names, findings, out.outcomes, t,
                                      full=only is None)
        return self._finish(
            PassResult(out.decisions, findings, out.outcomes, out.conflict, None,
                       scope="full" if only is None else "incremental"), started)

    def _findings(self, out: PassOutput, index: ClusterIndex, desired: DesiredState,
                  only: frozenset[str] | None, vms: Mapping[str, str]) -> tuple[Finding, ...]:
        """The pass's findings with the N+1 checker's and the file's own; an incremental
        pass checked only its VMs: the others' findings still stand."""
        findings = out.findings
        if only is None:
            found = balance.guests(index, desired)
            metrics.update_cpu_load(
                balance.loads(found, balance.node_cpus(index)) if found is not None else None)
        if self.failover is not None:
            if only is None:
                self.failover.offer(index, desired.capacity.tolerate
                                    if desired.capacity is not None else 1)
            findings = findings + self.failover.findings(desired)
            metrics.update_failover(self.failover.latest)
        loud = invalid_finding(self.desired)
        if loud is not None:
            findings = (loud, *findings)
        last = self.view.last
        if only is not None and last is not None:
            mine = {rid for name, rid in vms.items() if name in only}
            findings = tuple(f for f in last.findings if f.rsc not in mine
                             and f.kind != "desired-invalid") + findings
        return findings

    def _update_drift(self, out: PassOutput, findings: tuple[Finding, ...],
                      only: frozenset[str] | None, vms: Mapping[str, str]) -> None:
        """Drift as the reconcilers see it; an incremental pass saw only its VMs: their
        verdict replaces theirs, the rest stands (cluster-wide ones too)."""
        now_drift = drift(out.decisions, findings, out.pending)
        if only is None:
            self._drift = now_drift
            return
        mine = {rid for name, rid in vms.items() if name in only}
        self._drift = {**{k: i for k, i in self._drift.items() if i.rsc not in mine
                          or i.rsc is None}, **now_drift}

    def _read(self) -> str | None:
        try:
            reading = self.source()
        except WardenError as exc:
            metrics.PROBE_ERRORS.labels(probe="pacemaker").inc()
            self.log.error("observe_failed", error=str(exc))
            return str(exc)
        except OSError as exc:  # a file the reading needs (disk full, descriptors): not fatal
            metrics.PROBE_ERRORS.labels(probe="pacemaker").inc()
            self.log.error("observe_failed", error=str(exc))
            return f"cannot read the cluster: {exc}"
        self.store.observe(reading.observations, CONTROLLER, reading.at)
        self.cib = reading.cib
        return None

    def _after(self, out: PassOutput) -> None:
        """A change landed or a conflict: a full, urgent pass re-reads what it did."""
        if out.applied and self.after_apply:
            self.after_apply()
        if out.applied or out.conflict:
            self.scheduler.urgent()

    def _report(self, out: PassOutput, findings: tuple[Finding, ...],
                fail_counts: Mapping[tuple[str, str], int], full: bool) -> None:
        observed = self.view.observed
        if full:  # an incremental pass decides for some VMs only
            metrics.update_held(d.verdict.reason for d in out.decisions if not d.verdict.admitted)
        metrics.update_vms(self.view.rows, fail_counts,
                           sorted(observed.status.nodes) if observed is not None else ())
        metrics.STORAGE_DEPS_MISSING.set(sum(
            1 for d in out.decisions if d.action.reconciler == storage.NAME
            and isinstance(d.action, AddOrder | AddColocation)))
        for d in out.decisions:
            metrics.ACTIONS.labels(kind=type(d.action).__name__, verdict=d.verdict.reason).inc()
            if not d.verdict.admitted and d.verdict.reason != "previewing":
                metrics.GUARD_REFUSALS.labels(reason=d.verdict.reason).inc()
            self.log.info("decision", action=describe(d.action), reconciler=d.action.reconciler,
                          why=d.action.why, verdict=d.verdict.reason, detail=d.verdict.detail)
        self._log_findings(findings)
        metrics.update_findings(findings, self.view.vm_names)
        if out.error:
            self.log.warning("pass_not_applied", error=out.error)

    def _log_findings(self, findings: tuple[Finding, ...]) -> None:
        """A finding is logged when it appears and when it is gone, not on every pass (the
        metrics and the web view hold the current ones)."""
        now = {(f.kind, f.subject, f.message): f for f in findings}
        for key, f in now.items():
            if key not in self._logged:
                self.log.warning("finding", reconciler=f.reconciler, kind=f.kind, reason=f.reason,
                                 severity=f.severity, subject=f.subject, message=f.message)
        for kind, subject, message in sorted(self._logged - now.keys()):
            self.log.info("finding_gone", kind=kind, subject=subject, message=message)
        self._logged = frozenset(now)

    def _finish(self, result: PassResult, started: float) -> PassResult:
        duration = time.monotonic() - started
        finished = time.time()
        result = PassResult(result.decisions, result.findings, result.outcomes, result.conflict,
                            result.error, duration, result.scope, finished)
        metrics.PASSES.labels(result="error" if result.error else "ok", scope=result.scope).inc()
        metrics.PASS_DURATION.observe(duration)
        if result.error is None:  # "not reconciling" must fire while crm_mon keeps failing
            metrics.LAST_PASS.set(finished)
        metrics.update_drift(i.reconciler for i in self._drift.values())
        v = self.view
        self.view = Published(result, v.observed, v.rows, v.vms, v.vm_names, v.preview, v.index)
        if self.ledger_file is not None:
            self.ledger_file.save(self.ledger, finished)
        return result

    def _guarded_pass(self, only: frozenset[str] | None) -> PassResult:
        """A pass that fails for any reason (a full disk under the history database, a bug)
        is a failed pass, logged and counted: the loop goes on and the next pass runs."""
        started = time.monotonic()
        try:
            return self.run_pass(only=only)
        except Exception as exc:  # noqa: BLE001 - nothing may end the loop
            self.log.exception("pass_crashed", error=repr(exc))
            return self._finish(PassResult((), (), error=f"the pass failed: {exc!r}",
                                           scope="full" if only is None else "incremental"),
                                started)

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
        sched = self.scheduler
        while not self._stop.is_set():
            metrics.beat(me)
            sched.due(time.time())  # a plan asked to run again by now (a grace has ended)
            rejected = self.desired.rejected_at
            # A new file in force, or one rejected: a pass now (the finding, the banner).
            changed = self.desired.poll() or self.desired.rejected_at != rejected
            now = time.monotonic()
            if changed or sched.wake.is_set() or now >= next_resync:
                sched.wake.clear()
                full, urgent, dirty = sched.take()
                domains = frozenset(d.name for d in dirty if d.kind == "domain")
                if full and not (urgent or changed or now >= next_resync or self.cib is None) \
                        and now - last_full < MIN_FULL_PASS_SECONDS:
                    sched.defer(True, dirty)
                    self._stop.wait(MIN_FULL_PASS_SECONDS - (now - last_full))
                    sched.wake.set()
                    continue
                if full or changed or now >= next_resync or self.cib is None:
                    last_full = time.monotonic()
                    result = self._guarded_pass(None)
                    period = (self.desired.current.policy.resync_seconds
                              if self.desired.current else 30)
                    next_resync = time.monotonic() + period
                elif domains:
                    result = self._guarded_pass(domains)
                else:
                    continue
                if on_pass:
                    on_pass(result)
                done += 1
                if passes and done >= passes:
                    return
            if sched.wake.wait(timeout=1.0):  # also polls the desired file once a second
                time.sleep(DEBOUNCE_SECONDS)  # a burst of events becomes one pass
