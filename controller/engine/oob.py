"""Out-of-band changes: a cluster VM started, stopped, paused, resumed, migrated or undefined
behind Pacemaker's back (`virsh destroy` on a node, a guest powering itself off...).

Every lifecycle change Pacemaker makes happens inside one of its operations: VirtualDomain's
start runs `virsh create`, its stop `virsh shutdown`/`destroy`, migrate_to runs the live
migration. Pacemaker records each one-shot operation in the CIB's status -- when it starts
(record-pending, op-status -1) and when it ends (last-rc-change, exec-time). So a libvirt event
is Pacemaker's own when an operation of the right kind on that resource was running at that
instant; otherwise it is out of band: one audit record (kind `out_of_band`), a metric, and a
finding for an hour that nothing kvm-warden does afterwards erases.

The CIB is read as soon as an event arrives (a fraction of a second after it happened), while
the operation that caused it is still pending or has just ended: Pacemaker's recovery of an
out-of-band stop (monitor, stop, start) only begins seconds later, so it cannot be mistaken for
the cause. Operations seen in earlier reads are kept for a while, because a record in the CIB
is replaced by the next operation of the same resource on the node. Faults (a crash, an I/O
error, a watchdog) are not "changes": Pacemaker's monitor and the paused check cover them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from controller import metrics
from controller.engine.audit import AuditLog, AuditRecord, audit_time
from controller.logs import logger
from controller.model.context import OutOfBandChange
from controller.model.errors import WardenError
from controller.model.events import DomainLifecycle, Envelope
from controller.model.observed import OpRecord
from controller.threads import Background
from probes.pacemaker.cib import parse_operations

MIGRATE = frozenset({"migrate_to", "migrate_from"})
START, STOP = frozenset({"start"}), frozenset({"stop"})
ANY = START | STOP | MIGRATE
# (event, detail) -> the operations that cause it; None: a fault or noise, never judged.
# A migration's events happen on both nodes during migrate_to (on the source), so those match
# the resource's migrations on any node.
CAUSES: dict[str, dict[str, frozenset[str]] | frozenset[str] | None] = {
    "started": {"booted": START, "restored": START, "from-snapshot": START, "wakeup": START,
                "migrated": MIGRATE},
    "stopped": {"shutdown": STOP, "destroyed": STOP, "saved": STOP, "from-snapshot": STOP,
                "migrated": MIGRATE, "failed": frozenset(), "crashed": frozenset()},
    # QEMU 10 / libvirt 11 (Debian 13): the source of a live migration reports "shutdown/host"
    # when libvirt quits it after the migration, before its "stopped/migrated"
    "shutdown": {"finished": STOP, "guest": STOP, "host": STOP | MIGRATE},
    "suspended": {"paused": frozenset(), "api-error": frozenset(), "migrated": MIGRATE,
                  "postcopy": MIGRATE, "ioerror": frozenset(), "watchdog": frozenset()},
    # libvirt starts QEMU with its CPUs stopped and resumes them: a start's own "unpaused"
    "resumed": {"unpaused": START, "migrated": MIGRATE, "postcopy": MIGRATE},
    "defined": ANY,
    "undefined": ANY,
}
FAULTS = {("stopped", "failed"), ("stopped", "crashed"), ("suspended", "ioerror"),
          ("suspended", "watchdog")}
BEFORE = 1.0  # last-rc-change is whole seconds: an operation may have begun up to 1 s "later"
AFTER = 1.5
JOURNAL_SECONDS = 600.0
MERGE_SECONDS = 5.0  # one `virsh shutdown` is several events: one record
MAX_BATCH = 1000
POLL_SECONDS = 1.0  # re-read while an operation is pending
SETTLE_SECONDS = 0.05  # Pacemaker records a pending operation before it runs the agent: read
# at once -- an operation that ends just after its event is soon replaced by the next one (a
# stop's record by the start that follows it), and then only an earlier sighting explains it.


def causes(event: str, detail: str) -> frozenset[str] | None:
    """The operations that would explain this event, or None if it is not judged at all."""
    if (event, detail) in FAULTS:
        return None
    entry = CAUSES.get(event)
    if entry is None:
        return None
    if isinstance(entry, frozenset):
        return entry
    return entry.get(detail, ANY)


def explains(op: OpRecord, at: float, pending_until: float | None = None) -> bool:
    """Whether `op` was running at `at` (with the slack of whole-second timestamps).
    `pending_until`: a pending operation last seen pending then (None: pending now)."""
    if op.op_status == -1:  # pending: started at last-rc-change, not finished
        return op.last_rc_change - BEFORE <= at and (
            pending_until is None or at <= pending_until + AFTER)
    run = op.exec_ms / 1000.0
    return op.last_rc_change - run - BEFORE <= at <= op.last_rc_change + run + AFTER


def judge(ev: DomainLifecycle, at: float, resource: str, ops: Iterable[OpRecord],
          seen_pending: Mapping[OpRecord, float] | None = None) -> bool | None:
    """True: Pacemaker made this change; False: out of band; None: not a change we judge.
    `ops`: the operations of the CIB as read now, and finished ones read before;
    `seen_pending`: operations read pending before, gone since: when the read found them gone."""
    wanted = causes(ev.event, ev.detail)
    if wanted is None:
        return None
    candidates = [(op, None) for op in ops] + list((seen_pending or {}).items())
    for op, until in candidates:
        if op.resource != resource or op.task not in wanted:
            continue
        if op.task not in MIGRATE and op.node != ev.node:
            continue
        if explains(op, at, until):
            return True
    return False


@dataclass
class OutOfBandWatcher:
    """Judges the libvirt events of cluster VMs on its own thread (it reads the CIB).

    What it knows of Pacemaker's operations: finished ones (a journal: the CIB keeps only the
    last one per resource and node), pending ones as the last read shows them, and ones that were
    pending and are gone -- each with the time of the read that found it gone, the latest it can
    have ended. While any operation is pending it re-reads every POLL_SECONDS, so that bound stays
    tight; the loop pokes it when crm_mon shows a resource in transition, so that a long stop is
    seen pending before its guest is destroyed at the end of it.
    """

    query: Callable[[], bytes]  # the CIB's status section
    vms: Callable[[], Mapping[str, str]]  # libvirt domain name -> resource id, every cluster VM
    audit: AuditLog
    found: Callable[[OutOfBandChange], None]  # the loop's inbox (ledger + wake)
    _inbox: queue.Queue[tuple[DomainLifecycle, float, float]] = field(
        default_factory=lambda: queue.Queue(maxsize=10_000))
    _journal: dict[tuple[str, str, str, int, int], OpRecord] = field(default_factory=dict)
    _open: set[OpRecord] = field(default_factory=set)  # pending at the last read
    # Events judged so far, and failures of the judge (logged and counted, never fatal): what
    # a test waits on instead of a sleep, and what it asserts is zero.
    judged: int = 0
    errors: int = 0
    _ended: dict[OpRecord, float] = field(default_factory=dict)  # -> read that found it gone
    _last_read: float = float("-inf")
    _last: dict[str, float] = field(default_factory=dict)  # vm -> last record (merging)
    _poked: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.log = logger(component="out-of-band")
        self._bg = Background("out-of-band", lambda _: self._run())
        self._stop = self._bg.stopping

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        self._bg.start()

    def stop(self) -> None:
        self._bg.stop()

    def poke(self) -> None:
        """crm_mon shows an operation in flight: read the CIB soon (any thread)."""
        self._poked.set()

    def offer(self, env: Envelope) -> None:
        """Called for every envelope the store folds (bus thread): cheap, never raises."""
        p = env.payload
        if not isinstance(p, DomainLifecycle) or causes(p.event, p.detail) is None:
            return
        try:
            self._inbox.put_nowait((p, env.sent_at, time.monotonic()))
        except queue.Full:
            metrics.PROBE_ERRORS.labels(probe="out-of-band").inc()

    def _run(self) -> None:
        me = threading.current_thread().name
        while not self._stop.is_set():
            metrics.beat(me)
            try:
                batch = [self._inbox.get(timeout=POLL_SECONDS)]
            except queue.Empty:
                batch = []
            while batch and len(batch) < MAX_BATCH:  # a burst: one CIB read
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                if batch:
                    self._judge(batch)
                    self.judged += len(batch)
                elif self._poked.is_set() or (
                        self._open and time.monotonic() - self._last_read >= POLL_SECONDS):
                    self._poked.clear()
                    self._read()
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the thread
                self.errors += 1
                metrics.PROBE_ERRORS.labels(probe="out-of-band").inc()
                self.log.error("out_of_band_check_failed", error=repr(exc))

    def _read(self) -> list[OpRecord] | None:
        """Read the status section and update what is known; the pending operations, or None."""
        try:
            ops = parse_operations(self.query(), source="cibadmin --query --scope status")
        except WardenError as exc:
            self.log.warning("out_of_band_status_unread", error=str(exc))
            return None
        now = time.time()
        self._last_read = time.monotonic()
        for op in ops:
            if op.op_status != -1:
                self._journal[(op.resource, op.node, op.task, op.call_id, op.last_rc_change)] = op
        pending = {op for op in ops if op.op_status == -1}
        for op in self._open - pending:
            self._ended[op] = now  # it ended at the latest now
        self._open = pending
        self._journal = {k: o for k, o in self._journal.items()
                         if now - o.last_rc_change < JOURNAL_SECONDS}
        self._ended = {op: t for op, t in self._ended.items() if now - t < JOURNAL_SECONDS}
        return sorted(pending, key=lambda o: (o.resource, o.node, o.task))

    def _judge(self, batch: list[tuple[DomainLifecycle, float, float]]) -> None:
        vms = self.vms()
        batch = [b for b in batch if b[0].domain in vms]
        if not batch:
            return  # not VMs kvm-warden watches over
        wait = batch[-1][2] + SETTLE_SECONDS - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        pending = self._read()
        if pending is None:
            # Unknown is not "out of band": without Pacemaker's record we accuse nobody.
            self.log.warning("out_of_band_unjudged", events=len(batch))
            return
        known = [*self._journal.values(), *pending]
        for ev, at, _ in batch:
            rid = vms[ev.domain]
            if judge(ev, at, rid, known, self._ended) is False:
                self._found(ev, at, ev.domain, rid)

    def _found(self, ev: DomainLifecycle, at: float, name: str, rid: str) -> None:
        what = f"{ev.event}/{ev.detail}" if ev.detail else ev.event
        if at - self._last.get(name, float("-inf")) < MERGE_SECONDS:
            self._last[name] = at
            self.log.info("out_of_band_more", vm=name, node=ev.node, what=what)
            return
        self._last[name] = at
        change = OutOfBandChange(at=at, vm=name, resource=rid, node=ev.node, what=what)
        metrics.OUT_OF_BAND.labels(vm=name, node=ev.node).inc()
        self.audit.write([AuditRecord(
            at=audit_time(at), who="out-of-band",
            outcome="observed", action=f"{what} of {name} on {ev.node}", kind="out_of_band",
            reconciler="out-of-band", resource=rid, verdict="observed",
            why=f"libvirt reported {what} on {ev.node}; Pacemaker ran no matching operation "
                f"on {rid} then")])
        self.found(change)
