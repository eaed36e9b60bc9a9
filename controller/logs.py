"""Logging: structlog configured once per process (audit records: controller/engine/audit.py)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


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
