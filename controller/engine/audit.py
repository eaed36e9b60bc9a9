"""The audit trail: one record per action kvm-warden applied, failed to apply, or refused.

Records go to the log (structlog, event "audit") and to a JSON-lines file in the state
directory (`audit.jsonl`, rotated by size), from the service and from `plan --apply` alike;
`kvm-warden audit` reads them back. A refusal is recorded when it starts (the same refusal
repeated pass after pass is one record, not one per pass).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from controller.engine.decide import Decision
from controller.engine.writer import STATE_FILE_MODE, make_state_dir
from controller.logs import logger
from controller.model.actions import Outcome, describe

ROTATE_BYTES = 10 * 1024 * 1024
# Free space the state directory must have for kvm-warden to change the cluster: room for
# thousands of records, so that no change goes unrecorded (the guard's `audit-unwritable`).
RESERVE_BYTES = 1024 * 1024
KEEP = 5  # audit.jsonl.1 .. audit.jsonl.5


def audit_time(at: float | None = None) -> datetime:
    """A record's time: UTC, whole seconds (written by msgspec as 2026-12-05T11:26:34Z, the
    one place it is formatted)."""
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).replace(microsecond=0)


class AuditRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    at: datetime  # UTC, whole seconds: see audit_time
    who: str  # "service", or "user:NAME" for plan --apply
    outcome: str  # applied | failed | refused
    action: str
    kind: str
    reconciler: str
    why: str
    resource: str | None = None
    verdict: str = "admitted"
    detail: str = ""
    before: str | None = None
    after: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    id: str | None = None  # a web edit's: the id its confirmation showed the operator
    previewed_by: str | None = None  # whose scheduler previewed a change sent (preview.py)


def invoking_user() -> str:
    """Who ran a command: the sudo user behind root when there is one."""
    return f"user:{os.environ.get('SUDO_USER') or getpass.getuser()}"


def records(decisions: Sequence[Decision], outcomes: Sequence[Outcome], who: str,
            error: str | None = None, previewed_by: str | None = None) -> list[AuditRecord]:
    """One record per decision: its outcome if it was sent, `failed` with `error` if the
    whole patch failed (a CIB conflict, a tool error), `refused` with the guard's reason."""
    at = audit_time()
    by_action = {id(o.action): o for o in outcomes}
    out = []
    for d in decisions:
        a = d.action
        o = by_action.get(id(a))
        base = dict(at=at, who=who, action=describe(a), kind=type(a).__name__,
                    reconciler=a.reconciler, why=a.why, resource=a.resource,
                    verdict=d.verdict.reason, detail=d.verdict.detail)
        if not d.verdict.admitted:
            out.append(AuditRecord(outcome="refused", **base))  # type: ignore[arg-type]
        elif o is not None:
            out.append(AuditRecord(outcome="applied" if o.applied else "failed",
                                   before=o.before, after=o.after,
                                   duration_s=round(o.duration, 4), error=o.error,
                                   previewed_by=previewed_by or None,
                                   **base))  # type: ignore[arg-type]
        elif error is not None:
            out.append(AuditRecord(outcome="failed", error=error, **base))  # type: ignore[arg-type]
    return out


class PassAudit:
    """The audit of passes: every change sent; a refusal when it starts (`dedupe`, the
    service: not again on every pass while it lasts) or every time (`plan`). A patch held
    while its preview runs is not a refusal and is not recorded."""

    def __init__(self, log: AuditLog, who: str, dedupe: bool):
        self.log, self.who, self.dedupe = log, who, dedupe
        self._refusals: set[tuple[str, str]] = set()

    def write(self, decisions: Sequence[Decision], outcomes: Sequence[Outcome],
              error: str | None, full: bool, previewed_by: str | None = None) -> None:
        decisions = [d for d in decisions if d.verdict.reason != "previewing"]
        if self.dedupe:
            refusals: set[tuple[str, str]] = {(d.action.key, d.verdict.reason) for d in decisions
                        if not d.verdict.admitted}
            decisions = [d for d in decisions if d.verdict.admitted
                         or (d.action.key, d.verdict.reason) not in self._refusals]
            # An incremental pass sees only its VMs: the others' refusals still stand.
            self._refusals = refusals if full else self._refusals | refusals
        self.log.write(records(decisions, outcomes, self.who, error, previewed_by))

    def unwritable(self) -> str | None:
        return self.log.unwritable()


class AuditLog:
    """Appends records to `<state dir>/audit.jsonl` and logs them; never raises."""

    NAME = "audit.jsonl"

    def __init__(self, state_dir: str | Path | None):
        self.path = Path(state_dir) / self.NAME if state_dir is not None else None
        self.log = logger(component="audit")

    def write(self, recs: Iterable[AuditRecord]) -> None:
        lines = []
        for r in recs:
            self.log.info("audit", **msgspec.to_builtins(r))
            lines.append(msgspec.json.encode(r) + b"\n")
        if not lines or self.path is None:
            return
        try:
            make_state_dir(self.path.parent)
            self._rotate()
            _append_whole(self.path, b"".join(lines))
        except OSError as exc:
            self.log.error("audit_not_written", path=str(self.path), error=str(exc))

    def unwritable(self) -> str | None:
        """Why a change now could not be recorded (None: it can): the state directory's
        filesystem has less than RESERVE_BYTES free. A directory not made yet is judged by
        the nearest one that exists."""
        if self.path is None:
            return None
        where = self.path.parent
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            st = os.statvfs(where)
        except OSError as exc:
            return f"the state directory {self.path.parent} cannot be read: {exc.strerror}"
        free = st.f_bavail * st.f_frsize
        if free < RESERVE_BYTES:
            return (f"the state directory {self.path.parent} has {free // 1024} kB free "
                    f"(a change needs {RESERVE_BYTES // 1024} kB for its audit record)")
        return None

    def _rotate(self) -> None:
        assert self.path is not None
        try:
            if self.path.stat().st_size < ROTATE_BYTES:
                return
        except FileNotFoundError:
            return
        for k in range(KEEP - 1, 0, -1):
            older = self.path.with_name(f"{self.NAME}.{k}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.NAME}.{k + 1}"))
        self.path.replace(self.path.with_name(f"{self.NAME}.1"))


def _append_whole(path: Path, data: bytes) -> None:
    """Append all of `data` or nothing: a write cut short (a full disk) is undone, or the torn
    record would glue itself to the next one and both would be unreadable."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, STATE_FILE_MODE)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        rest = memoryview(data)
        try:
            while rest:
                rest = rest[os.write(fd, rest):]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def read(state_dir: str | Path) -> Iterator[AuditRecord]:
    """Every record, oldest first (rotated files included); unreadable lines are skipped."""
    base = Path(state_dir) / AuditLog.NAME
    files = [base.with_name(f"{AuditLog.NAME}.{k}") for k in range(KEEP, 0, -1)] + [base]
    decoder = msgspec.json.Decoder(AuditRecord)
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for line in data.splitlines():
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError:
                continue
