"""The state directory's files are the service's and its group's only: the audit trail, the
history and the ledger name users, VMs and what was done to them."""

from __future__ import annotations

import stat
from pathlib import Path

from controller.engine.audit import AuditLog, AuditRecord, audit_time
from controller.engine.history import History
from controller.engine.ledger import Ledger, LedgerFile


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_files_are_not_world_readable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    AuditLog(state).write([AuditRecord(at=audit_time(0.0), who="service",
                                       outcome="applied", action="a", kind="SetProperty",
                                       reconciler="properties", why="w")])
    LedgerFile(state).save(Ledger(), 0.0)
    History(state / "history.sqlite").close()
    assert mode(state) == 0o750
    assert mode(state / "audit.jsonl") == 0o640
    assert mode(state / "history.sqlite") == 0o640
    assert mode(state / "ledger.json") == 0o600


def test_an_audit_write_cut_short_by_a_full_disk_leaves_no_torn_record(tmp_path: Path) -> None:
    """The kernel cuts the write short (RLIMIT_FSIZE: a partial write, then EFBIG, as a full
    disk does with ENOSPC); the record is not half there, and the next write reads back."""
    import subprocess
    import sys

    from controller.engine.audit import read

    def rec(n: int) -> AuditRecord:
        return AuditRecord(at="2026-12-01T00:00:00Z", who="service", outcome="applied",
                           action=f"a{n}", kind="SetProperty", reconciler="properties",
                           why="w" * 200)

    AuditLog(tmp_path).write([rec(0)])
    size = (tmp_path / AuditLog.NAME).stat().st_size
    code = f"""
import resource, signal, sys
from pathlib import Path
from controller.engine.audit import AuditLog, AuditRecord, audit_time
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, resource.RLIM_INFINITY))
AuditLog(Path(sys.argv[1])).write([AuditRecord(at="2026-12-01T00:00:00Z", who="service",
    outcome="applied", action="cut", kind="SetProperty", reconciler="properties", why="w" * 200)])
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, check=True)
    assert "audit_not_written" in done.stdout + done.stderr  # it was cut short, and said so
    assert (tmp_path / AuditLog.NAME).stat().st_size == size
    AuditLog(tmp_path).write([rec(1)])
    assert [r.action for r in read(tmp_path)] == ["a0", "a1"]


def test_an_audit_time_is_written_as_before_and_read_back_as_a_time(tmp_path: Path) -> None:
    """Issue "One observation", 3: the record's time is a timestamp, formatted once (by the
    encoder) exactly as the files of earlier versions hold it; those are read back too."""
    import datetime as dt

    from controller.engine.audit import read

    AuditLog(tmp_path).write([AuditRecord(at=audit_time(1_764_936_000.7), who="service",
                                          outcome="applied", action="a", kind="SetProperty",
                                          reconciler="properties", why="w")])
    text = (tmp_path / AuditLog.NAME).read_text()
    assert '"at":"2025-12-05T12:00:00Z"' in text
    (rec,) = read(tmp_path)
    assert rec.at == dt.datetime(2025, 12, 5, 12, 0, 0, tzinfo=dt.UTC)
