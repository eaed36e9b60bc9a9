"""`kvm-warden history [VM] [--since WHEN]`: what happened to the VMs, from the state
directory's history database (the one the running controller writes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from controller.app.audit import service_state_dir, since_time
from controller.app.text import for_terminal
from controller.engine.history import Event, read
from controller.model.errors import WardenError

HISTORY_FILE = "history.sqlite"


def since_seconds(text: str) -> float:
    return since_time(text).timestamp()


def line(e: Event) -> str:
    at = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = f"{e.from_node} -> {e.to_node}" if e.from_node else (e.node or "-")
    took = f" in {e.duration_s:.1f} s" if e.duration_s is not None else ""
    return f"{at} {e.vm or '-':<12} {e.kind:<12} {where:<14} {e.detail}{took}"


def history_command(state_dir: str | None, vm: str | None, since: str | None, as_json: bool,
                    limit: int) -> int:
    path = Path(state_dir or service_state_dir()) / HISTORY_FILE
    if not path.exists():
        raise WardenError(f"{path}: no history yet (the controller writes it in --state-dir)")
    start = since_seconds(since) if since else None
    for e in read(path, vm, start, limit):
        print(msgspec.json.encode(e).decode() if as_json else for_terminal(line(e)))
    return 0

