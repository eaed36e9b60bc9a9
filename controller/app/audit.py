"""`kvm-warden audit`: the audit trail of the state directory, filtered, oldest first."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from controller.app.text import for_terminal
from controller.engine.audit import AuditLog, read
from controller.engine.ledger import DEFAULT_STATE_DIR
from controller.model.errors import WardenError
from controller.model.names import conventional_resource

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(text: str) -> datetime:
    """An ISO time (UTC unless it says otherwise, as the records are) or an age like `30m`."""
    m = _AGE.fullmatch(text.strip())
    if m:
        return datetime.fromtimestamp(time.time() - int(m.group(1)) * _UNIT[m.group(2)], UTC)
    if re.fullmatch(r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d)?)?Z?", text.strip()):
        at = datetime.fromisoformat(text.strip().replace(" ", "T").removesuffix("Z"))
        return at.replace(tzinfo=UTC)
    raise WardenError(f"--since {text!r}: an ISO time (2026-12-01T10:00) or an age (30m, 2h, 7d)")


def service_state_dir(default_file: Path = Path("/etc/default/kvm-warden")) -> str:
    """The service's state directory: $KVM_WARDEN_STATE_DIR, else what the package's default
    file says the controller uses, else the default."""
    if os.environ.get("KVM_WARDEN_STATE_DIR"):
        return os.environ["KVM_WARDEN_STATE_DIR"]
    try:
        for line in default_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "KVM_WARDEN_STATE_DIR" and value.strip():
                return value.strip().strip("'\"")
    except OSError:
        pass
    return DEFAULT_STATE_DIR


def audit_command(state_dir: str | None, since: str | None, vm: str | None, as_json: bool) -> int:
    start = since_time(since) if since else datetime.fromtimestamp(0, UTC)
    wanted = {vm, conventional_resource(vm)} if vm else None
    where = state_dir or service_state_dir()
    if not (Path(where) / AuditLog.NAME).exists():
        # Printing nothing would say "no change was ever made": say where nothing was found.
        raise WardenError(f"no audit log in {where} (the controller writes {AuditLog.NAME} in "
                          "its --state-dir; give that directory with --state-dir, or set "
                          "KVM_WARDEN_STATE_DIR)")
    for r in read(where):
        if r.at < start or (wanted is not None and r.resource not in wanted):
            continue
        if as_json:
            print(msgspec.json.encode(r).decode())
        else:
            extra = f" [{r.verdict}: {r.detail}]" if r.outcome == "refused" else (
                f" error: {r.error}" if r.error else "")
            print(for_terminal(f"{r.at:%Y-%m-%dT%H:%M:%SZ} {r.who:<14} {r.outcome:<8} {r.action}  "
                               f"({r.reconciler}: {r.why}){extra}"
                               + (f" [audit {r.id}]" if r.id else "")))
    return 0
