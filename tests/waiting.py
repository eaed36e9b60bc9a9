"""The one way tests wait for a real component: poll a condition until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, cond: Callable[[], T | None], timeout: float = 60.0,
             interval: float = 0.5) -> T:
    """The first truthy value of `cond()`; an AssertionError naming `what` after `timeout`.

    A component in transition may fail a query: an exception counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except Exception:  # noqa: BLE001 - a cluster or daemon in transition may fail a query
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(interval)
