"""Logging: structlog configured once per process, and the audit record of every change."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from controller.model.actions import Outcome, describe


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """JSON lines with an ISO timestamp; call once at process start."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def logger(**bound: Any) -> Any:
    return structlog.get_logger("kvm-warden").bind(**bound)


def audit_record(o: Outcome) -> dict[str, Any]:
    """The audit record of one action's outcome: what, why, who wanted it, before/after."""
    record: dict[str, Any] = {
        "action": describe(o.action), "kind": type(o.action).__name__,
        "reconciler": o.action.reconciler, "why": o.action.why, "before": o.before,
        "after": o.after, "outcome": "applied" if o.applied else "failed",
        "duration_s": round(o.duration, 4),
    }
    if o.error:
        record["error"] = o.error
    return record
