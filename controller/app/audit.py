"""`kvm-warden audit`: the audit trail of the state directory, filtered, oldest first."""

from __future__ import annotations

import re
import time

import msgspec

from controller.app.text import for_terminal
from controller.engine.audit import read
from controller.engine.ledger import DEFAULT_STATE_DIR
from controller.model.errors import WardenError

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_iso(text: str) -> str:
    """An ISO time (compared as text: records are UTC `...Z`) or an age like `30m`."""
    m = _AGE.fullmatch(text.strip())
    if m:
        at = time.time() - int(m.group(1)) * _UNIT[m.group(2)]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    if re.fullmatch(r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d)?)?Z?", text.strip()):
        return text.strip().replace(" ", "T")
    raise WardenError(f"--since {text!r}: an ISO time (2026-12-01T10:00) or an age (30m, 2h, 7d)")


def audit_command(state_dir: str | None, since: str | None, vm: str | None, as_json: bool) -> int:
    start = since_iso(since) if since else ""
    wanted = {vm, f"vm-{vm}"} if vm else None
    for r in read(state_dir or DEFAULT_STATE_DIR):
        if r.at < start or (wanted is not None and r.resource not in wanted):
            continue
        if as_json:
            print(msgspec.json.encode(r).decode())
        else:
            extra = f" [{r.verdict}: {r.detail}]" if r.outcome == "refused" else (
                f" error: {r.error}" if r.error else "")
            print(for_terminal(f"{r.at} {r.who:<14} {r.outcome:<8} {r.action}  "
                               f"({r.reconciler}: {r.why}){extra}"))
    return 0
