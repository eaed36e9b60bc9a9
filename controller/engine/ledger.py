"""The ledger: everything kvm-warden remembers between passes, in one place.

- the guard's memory: actions per kind in the last minute (rate limits), the last change per
  object (cooldowns), the moves it caused that have not settled yet (migration ceiling);
- the cleanup history health's backoff and circuit breaker read;
- when each placement finding was first seen (they count only once they persist).

It is updated from outcomes -- an action that was applied or that failed spends its rate and
starts its cooldown; a refused one spends nothing -- never from admissions. Within one pass the
guard admits against a tentative copy (decide.py), so limits hold inside a pass too.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from controller import metrics
from controller.engine.writer import make_state_dir
from controller.logs import logger
from controller.model.actions import (
    BALANCE_PREFIX,
    PREFER_PREFIX,
    TIMED_FINDINGS,
    AddColocation,
    AnyAction,
    Cleanup,
    FailResource,
    Finding,
    RemoveConstraint,
    RemoveVm,
    SetAllowedNodes,
    SetLocation,
    SetProperty,
)
from controller.model.context import (
    CIRCUIT_WINDOW,
    OUT_OF_BAND_SECONDS,
    CleanupHistory,
    LedgerView,
    OutOfBandChange,
)
from controller.model.index import ClusterIndex

# Where the ledger and the audit log live unless --state-dir says otherwise (on the shared
# storage when the controller is a cluster resource).
DEFAULT_STATE_DIR = "/var/lib/kvm-warden"
RATE_WINDOW_SECONDS = 60.0
MIGRATION_SETTLE_SECONDS = 300.0  # a move we caused counts as in flight until crm_mon settles
# libvirt's events and crm_mon's snapshot are not taken at the same instant: during a start or
# a migration one may show the guest where the other does not yet. A placement mismatch is
# reported only once it has lasted this long (Pacemaker's own monitor interval is seconds).
FINDING_PERSIST_SECONDS = 15.0


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
        case RemoveConstraint(id=i, rsc=r) if r and i.startswith(("cli-", PREFER_PREFIX)):
            return r if r in index.running else None
    return None


@dataclass
class Ledger:
    by_kind: dict[str, deque[float]] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    moves: dict[str, float] = field(default_factory=dict)
    cleanups: CleanupHistory = field(default_factory=CleanupHistory)
    # Memories that are not cooldowns: when kvm-warden marked a resource failed on a node (once
    # per pause), and when an enrollment was rolled back (not retried at once).
    failed: dict[tuple[str, str], float] = field(default_factory=dict)
    rolled_back: dict[str, float] = field(default_factory=dict)
    # when rebalancing last asked to move a resource (its cooldown: never moved twice in it)
    balanced: dict[str, float] = field(default_factory=dict)
    finding_since: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, subject)
    saved_properties: dict[str, str | None] = field(default_factory=dict)  # a drain's: put back
    # out-of-band changes of the last hour: findings until they age out, whatever kvm-warden or
    # Pacemaker does meanwhile (a cleanup after the recovery does not erase them)
    out_of_band: list[OutOfBandChange] = field(default_factory=list)

    def view(self) -> LedgerView:
        return LedgerView(cleanups=self.cleanups, out_of_band=tuple(self.out_of_band),
                          saved_properties=dict(self.saved_properties),
                          failed_at=dict(self.failed), rolled_back=dict(self.rolled_back),
                          finding_since=dict(self.finding_since),
                          balanced_at=dict(self.balanced))

    def saw_out_of_band(self, changes: list[OutOfBandChange], now: float) -> None:
        self.out_of_band = [c for c in (*self.out_of_band, *changes)
                            if now - c.at < OUT_OF_BAND_SECONDS]

    def tentative(self) -> Ledger:
        """A copy the guard may spend from while it admits one pass's actions."""
        return copy.deepcopy(self)

    # -- the guard's memory ------------------------------------------------------------------
    def spend(self, action: AnyAction, index: ClusterIndex, now: float) -> None:
        """An attempt at `action` (applied or failed): its rate, its cooldown, its move."""
        self.last_change[action.key] = now
        self.by_kind.setdefault(type(action).__name__, deque()).append(now)
        match action:
            case FailResource(rsc=r, node=n):
                self.failed[(r, n)] = now
            case RemoveVm(rsc=r, rollback=True):
                self.rolled_back[r] = now
            case SetLocation(rsc=r) if action.id.startswith(BALANCE_PREFIX):
                self.balanced[r] = now
        moved = moves_resource(action, index)
        if moved is not None:
            self.moves[moved] = now

    def actions_in_window(self, kind: str, now: float) -> int:
        window = self.by_kind.get(kind)
        if window is None:
            return 0
        while window and now - window[0] >= RATE_WINDOW_SECONDS:
            window.popleft()
        return len(window)

    def migrations_in_flight(self, index: ClusterIndex, now: float) -> set[str]:
        # A move counts until crm_mon shows it settled: not migrating and running on one node.
        # A resource gone from the cluster (retired, removed) has no migration in flight: it
        # held the ceiling for five minutes (a retired VM's move blocked a drain after it).
        for rsc, since in list(self.moves.items()):
            settled = rsc not in index.migrating and len(index.running.get(rsc, ())) == 1
            gone = rsc not in index.exists and bool(index.exists)
            if (settled and now - since > 1.0) or gone or now - since > MIGRATION_SETTLE_SECONDS:
                del self.moves[rsc]
        return set(self.moves) | set(index.migrating)

    # -- outcomes ----------------------------------------------------------------------------
    def record(self, action: AnyAction, applied: bool, index: ClusterIndex, now: float) -> None:
        """What became of an admitted action: applied or failed (a refusal is not recorded)."""
        self.spend(action, index, now)
        if applied and isinstance(action, Cleanup):
            self.cleanups = self.cleanups.record(action.rsc, action.node, now)
        if applied and isinstance(action, SetProperty):
            if action.saves:  # the first value a drain replaced is the one to put back
                self.saved_properties.setdefault(action.name, action.previous)
            if action.restores:
                self.saved_properties.pop(action.name, None)

    # -- finding timers ----------------------------------------------------------------------
    def persistent(self, findings: tuple[Finding, ...], now: float, prune: bool = True
                   ) -> tuple[tuple[Finding, ...], tuple[tuple[Finding, float], ...]]:
        """(the findings to report, the placement findings younger than
        FINDING_PERSIST_SECONDS with their age). Timers are keyed by (kind, subject): a
        reworded message keeps its timer. `prune`: forget the ones not seen in this pass (an
        incremental pass sees only its VMs: it cannot)."""
        keep, young, seen = [], [], set()
        for f in findings:
            if f.kind not in TIMED_FINDINGS or f.urgent:
                keep.append(f)
                continue
            key = (f.kind, f.subject)
            seen.add(key)
            first = self.finding_since.setdefault(key, now)
            if now - first >= FINDING_PERSIST_SECONDS:
                keep.append(f)
            else:
                young.append((f, now - first))
        if prune:
            self.finding_since = {k: v for k, v in self.finding_since.items() if k in seen}
        return tuple(keep), tuple(young)


class LedgerRecord(msgspec.Struct, kw_only=True):
    """The ledger as written to the state directory (JSON; times are wall-clock seconds)."""

    version: int = 2  # 2: failed and rolled_back have fields of their own
    by_kind: dict[str, list[float]] = msgspec.field(default_factory=dict)
    last_change: dict[str, float] = msgspec.field(default_factory=dict)
    failed: list[tuple[str, str, float]] = msgspec.field(default_factory=list)
    rolled_back: dict[str, float] = msgspec.field(default_factory=dict)
    balanced: dict[str, float] = msgspec.field(default_factory=dict)
    moves: dict[str, float] = msgspec.field(default_factory=dict)
    cleanups: dict[str, list[float]] = msgspec.field(default_factory=dict)
    finding_since: list[tuple[str, str, float]] = msgspec.field(default_factory=list)
    saved_properties: dict[str, str | None] = msgspec.field(default_factory=dict)
    out_of_band: list[OutOfBandChange] = msgspec.field(default_factory=list)


KEEP_SECONDS = 86400.0  # cooldown marks older than this are dropped when the ledger is written


def to_record(ledger: Ledger, now: float) -> LedgerRecord:
    return LedgerRecord(
        by_kind={k: list(v) for k, v in ledger.by_kind.items() if v},
        last_change={k: t for k, t in ledger.last_change.items() if now - t < KEEP_SECONDS},
        failed=[(r, n, t) for (r, n), t in ledger.failed.items() if now - t < KEEP_SECONDS],
        rolled_back={r: t for r, t in ledger.rolled_back.items() if now - t < KEEP_SECONDS},
        balanced={r: t for r, t in ledger.balanced.items() if now - t < KEEP_SECONDS},
        moves=dict(ledger.moves),
        cleanups={k: list(v) for k, v in ledger.cleanups.attempts.items()
                  if v and now - v[-1] < CIRCUIT_WINDOW},
        finding_since=[(s, m, t) for (s, m), t in ledger.finding_since.items()],
        saved_properties=dict(ledger.saved_properties),
        out_of_band=[c for c in ledger.out_of_band if now - c.at < OUT_OF_BAND_SECONDS],
    )


def from_record(rec: LedgerRecord) -> Ledger:
    failed, rolled_back = _version_1_marks(rec) if rec.version < 2 else ({}, {})
    return Ledger(
        by_kind={k: deque(v) for k, v in rec.by_kind.items()},
        last_change=dict(rec.last_change), moves=dict(rec.moves),
        failed={**failed, **{(r, n): t for r, n, t in rec.failed}},
        rolled_back={**rolled_back, **rec.rolled_back}, balanced=dict(rec.balanced),
        cleanups=CleanupHistory(attempts={k: tuple(v) for k, v in rec.cleanups.items()}),
        finding_since={(s, m): t for s, m, t in rec.finding_since},
        saved_properties=dict(rec.saved_properties),
        out_of_band=list(rec.out_of_band),
    )


def _version_1_marks(rec: LedgerRecord) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """A file written before the marks had fields of their own kept them among the cooldowns,
    under their actions' keys (FailResource's fail:RSC:NODE, a rollback's rollback:RSC): read
    once, on the upgrade, so that neither memory is lost (ids and node names hold no colon)."""
    failed: dict[tuple[str, str], float] = {}
    rolled_back: dict[str, float] = {}
    for key, t in rec.last_change.items():
        kind, _, rest = key.partition(":")
        if kind == "fail" and rest.count(":") == 1:
            rsc, node = rest.split(":")
            failed[(rsc, node)] = t
        elif kind == "rollback" and rest:
            rolled_back[rest] = t
    return failed, rolled_back


class LedgerFile:
    """The ledger on disk, so that a restarted controller -- or one started on another node
    with the same (shared) state directory -- keeps every limit and open breaker.

    Written atomically (a temporary file in the same directory, fsync, rename) and only when it
    changed. A file that cannot be read is reported, set aside as `<name>.corrupt`, and replaced
    by an empty ledger: never a crash."""

    NAME = "ledger.json"

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.path = self.dir / self.NAME
        self._written = b""
        self.log = logger(component="ledger")

    def empty(self) -> Ledger:
        return Ledger()

    def load(self, set_aside: bool = True) -> Ledger:
        """The ledger on disk. `set_aside=False` (a read-only `plan`): an unreadable file is
        reported and left where it is for the service to deal with."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Ledger()
        except OSError as exc:
            self._reject(f"cannot read: {exc.strerror}", set_aside)
            return Ledger()
        try:
            rec = msgspec.json.decode(data, type=LedgerRecord)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
            self._reject(f"not a ledger: {exc}", set_aside)
            return Ledger()
        self._written = data
        self.log.info("ledger_loaded", path=str(self.path), cooldowns=len(rec.last_change),
                      cleanups=len(rec.cleanups), moves=len(rec.moves))
        return from_record(rec)

    def _reject(self, why: str, set_aside: bool = True) -> None:
        metrics.LEDGER_ERRORS.inc()
        self.log.error("ledger_unreadable", path=str(self.path), error=why,
                       action="set aside; starting with an empty ledger" if set_aside
                       else "planning with an empty ledger")
        if not set_aside:
            return
        try:
            os.replace(self.path, self.path.with_name(self.NAME + ".corrupt"))
        except OSError:
            pass  # nothing to set aside, or a read-only directory: the next save tells

    def save(self, ledger: Ledger, now: float) -> None:
        data = msgspec.json.encode(to_record(ledger, now))
        if data == self._written:
            return
        try:
            make_state_dir(self.dir)
            fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            metrics.LEDGER_ERRORS.inc()
            self.log.error("ledger_not_written", path=str(self.path), error=str(exc))
            return
        self._written = data
