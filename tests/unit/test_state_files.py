"""The state directory's files are the service's and its group's only: the audit trail, the
history and the ledger name users, VMs and what was done to them."""

from __future__ import annotations

import stat
from pathlib import Path

from controller.engine.audit import AuditLog, AuditRecord
from controller.engine.history import History
from controller.engine.ledger import Ledger, LedgerFile


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_files_are_not_world_readable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    AuditLog(state).write([AuditRecord(at="2026-12-01T00:00:00Z", who="service",
                                       outcome="applied", action="a", kind="SetProperty",
                                       reconciler="properties", why="w")])
    LedgerFile(state).save(Ledger(), 0.0)
    History(state / "history.sqlite").close()
    assert mode(state) == 0o750
    assert mode(state / "audit.jsonl") == 0o640
    assert mode(state / "history.sqlite") == 0o640
    assert mode(state / "ledger.json") == 0o600
