"""The history: what happened to every VM, in an embedded sqlite3 database in the state
directory (`history.sqlite`, beside the ledger -- on the shared storage when the controller is
a cluster resource, so a takeover keeps it).

One table of events: libvirt lifecycle events, moves and live migrations as Pacemaker carried
them out (from, to, how long the VM was migrating), failures, findings as they appear,
kvm-warden's applied actions, out-of-band changes and console sessions. Rows older than
`history.retention_days` are deleted (checked at most hourly). Writes come from the bus thread,
the loop and the web server: one connection behind a lock (sqlite serialises writes anyway);
WAL, so readers (the web view, `kvm-warden history`) never wait for a writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from controller.engine.writer import STATE_FILE_MODE, make_state_dir
from controller.logs import logger
from controller.model.actions import Finding, Outcome, describe
from controller.model.events import DomainLifecycle, Envelope
from controller.model.index import ClusterIndex

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    vm TEXT,
    node TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    from_node TEXT,
    to_node TEXT,
    duration_s REAL
);
CREATE INDEX IF NOT EXISTS events_vm_at ON events (vm, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""
PRUNE_EVERY_SECONDS = 3600.0
KINDS = ("lifecycle", "migration", "move", "failure", "finding", "action", "out_of_band",
         "console")


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    at: float
    kind: str
    vm: str | None = None
    node: str | None = None
    detail: str = ""
    from_node: str | None = None
    to_node: str | None = None
    duration_s: float | None = None


def _finding_key(f: Finding) -> tuple[str, str, str]:
    """A finding is a new event when it first appears; a rolling upgrade's step also each time
    it moves on (its message says the step), so the history is the upgrade's timeline."""
    return (f.kind, f.subject, f.message if f.kind.startswith("upgrade-") else "")


@dataclass
class History:
    path: Path
    retention_days: float = 30.0
    _placement: dict[str, tuple[str, ...]] = field(default_factory=dict)  # resource -> nodes
    _migrating_since: dict[str, float] = field(default_factory=dict)
    _failures: set[tuple[str, str]] = field(default_factory=set)
    _findings: set[tuple[str, str, str]] = field(default_factory=set)
    _pruned_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.log = logger(component="history")
        make_state_dir(self.path.parent)
        if not self.path.exists():  # sqlite creates it 0644 (the umask's): ours is 0640
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, STATE_FILE_MODE))
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ------------------------------------------------------------------------------
    def add(self, events: Iterable[Event]) -> None:
        rows = [(e.at, e.vm, e.node, e.kind, e.detail, e.from_node, e.to_node, e.duration_s)
                for e in events]
        if not rows:
            return
        try:
            with self._lock:
                self._db.executemany(
                    "INSERT INTO events (at, vm, node, kind, detail, from_node, to_node, "
                    "duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.commit()
        except sqlite3.Error as exc:  # a full disk must not stop the controller
            self.log.error("history_not_written", error=str(exc), path=str(self.path))

    def tap(self, env: Envelope, vms: Mapping[str, str], names: Mapping[str, str]) -> None:
        """A bus envelope: libvirt lifecycle events of cluster VMs (`vms`: domain -> resource
        id, `names`: resource id -> VM name)."""
        p = env.payload
        if isinstance(p, DomainLifecycle) and p.domain in vms:
            what = f"{p.event}/{p.detail}" if p.detail else p.event
            self.add([Event(at=env.sent_at, kind="lifecycle",
                            vm=names.get(vms[p.domain], p.domain), node=p.node, detail=what)])

    def observe_pass(self, index: ClusterIndex, vms: Mapping[str, str],
                     findings: tuple[Finding, ...], outcomes: Iterable[Outcome], now: float,
                     full: bool) -> None:
        """What changed since the last pass: moves, failures, new findings, applied actions.
        `vms`: resource id -> VM name of every cluster VM (controller/model/vms.py)."""
        events: list[Event] = []
        for rid, vm in vms.items():
            nodes = index.running.get(rid, ())
            if rid in index.migrating:
                self._migrating_since.setdefault(rid, now)
                continue  # placement is judged once the migration settled
            before = self._placement.get(rid)
            if before is not None and nodes and before and set(nodes) != set(before) \
                    and len(nodes) == 1 and len(before) == 1:
                since = self._migrating_since.get(rid)
                # Live when seen migrating, or when the CIB's history holds its migrate_to.
                live = since is not None or before[0] in index.migrated_from.get(
                    (rid, nodes[0]), ())
                events.append(Event(
                    at=now, kind="migration" if live else "move", vm=vm,
                    node=nodes[0], from_node=before[0], to_node=nodes[0],
                    duration_s=round(now - since, 3) if since is not None else None,
                    detail="live migration" if live else "stopped here, started there"))
            self._migrating_since.pop(rid, None)
            if nodes or full:
                self._placement[rid] = nodes
        names = vms
        if full:
            failures = {(rid, node) for (rid, node), n in index.fail_counts.items() if n > 0}
            for rid, node in sorted(failures - self._failures):
                events.append(Event(at=now, kind="failure", vm=names.get(rid), node=node,
                                    detail=f"{rid} failed on {node} (fail-count "
                                           f"{index.fail_counts[(rid, node)]})"))
            self._failures = failures
            current = {_finding_key(f) for f in findings}
            for f in findings:
                if _finding_key(f) not in self._findings:
                    events.append(Event(at=now, kind="finding", vm=names.get(f.rsc or ""),
                                        node=f.node, detail=f"{f.kind}: {f.message}"))
            self._findings = current
        for o in outcomes:
            if o.applied:
                events.append(Event(at=now, kind="action", vm=names.get(o.action.resource or ""),
                                    detail=describe(o.action)))
        self.add(events)
        self.prune(now)

    def prune(self, now: float, force: bool = False) -> int:
        if not force and now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return 0
        self._pruned_at = now
        try:
            with self._lock:
                cur = self._db.execute("DELETE FROM events WHERE at < ?",
                                       (now - self.retention_days * 86400.0,))
                self._db.commit()
                return cur.rowcount
        except sqlite3.Error as exc:
            self.log.error("history_not_pruned", error=str(exc))
            return 0

    # -- reading ------------------------------------------------------------------------------
    def query(self, vm: str | None = None, since: float | None = None, limit: int = 1000,
              before: float | None = None) -> list[Event]:
        return read(self.path, vm, since, limit, self._db, self._lock, before)


def read(path: Path, vm: str | None = None, since: float | None = None, limit: int = 1000,
         db: sqlite3.Connection | None = None, lock: threading.Lock | None = None,
         before: float | None = None) -> list[Event]:
    """The newest `limit` events (of one VM, since a time, before another: the next page
    back), oldest first."""
    sql = "SELECT at, kind, vm, node, detail, from_node, to_node, duration_s FROM events"
    where, args = [], []  # type: list[str], list[object]
    if vm is not None:
        where.append("vm = ?")
        args.append(vm)
    if since is not None:
        where.append("at >= ?")
        args.append(since)
    if before is not None:
        where.append("at < ?")
        args.append(before)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY at DESC, id DESC LIMIT ?"
    args.append(max(1, min(limit, 100_000)))
    own = db is None
    conn = db if db is not None else sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        if lock is not None:
            with lock:
                rows = conn.execute(sql, args).fetchall()
        else:
            rows = conn.execute(sql, args).fetchall()
    finally:
        if own:
            conn.close()
    return [Event(at=r[0], kind=r[1], vm=r[2], node=r[3], detail=r[4] or "", from_node=r[5],
                  to_node=r[6], duration_s=r[7]) for r in reversed(rows)]
