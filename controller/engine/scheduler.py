"""The scheduler: what the next pass must cover and when it is due.

Events mark objects dirty (typed keys: model/events.Dirty) and wake the loop; quorum, mounts
and alerts ask for a full pass (crm_mon), libvirt events for an incremental one over their VMs;
our own changes, conflicts and finished previews ask for an urgent full pass (not rate-limited);
and a plan can say when it wants to run again (`Plan.requeue_at`: a grace period ending), so
the engine never needs to know which reconciler is waiting for what.
"""

from __future__ import annotations

import threading

from controller.model.events import Dirty


class Scheduler:
    """What the next pass must cover, and when it is due: the dirty set events mark, whether a
    full pass (crm_mon) is wanted, whether it is urgent (our own change: not rate-limited), and
    the time a plan asked to run again. Written by every thread, always under its lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[Dirty] = set()
        self._full = True
        self._urgent = False
        self._requeue_at: float | None = None
        self.wake = threading.Event()

    def mark(self, changed: frozenset[Dirty], full: bool = False) -> None:
        with self._lock:
            self._dirty |= changed
            self._full = self._full or full
        self.wake.set()

    def urgent(self) -> None:
        """A full pass now, not rate-limited: our change landed, a conflict, a preview ready."""
        with self._lock:
            self._full = self._urgent = True
        self.wake.set()

    def defer(self, full: bool, dirty: frozenset[Dirty]) -> None:
        """Not yet: keep what the events asked for."""
        with self._lock:
            self._full = self._full or full
            self._dirty |= dirty

    def take(self) -> tuple[bool, bool, frozenset[Dirty]]:
        with self._lock:
            full, urgent, dirty = self._full, self._urgent, frozenset(self._dirty)
            self._full, self._urgent, self._dirty = False, False, set()
        return full, urgent, dirty

    def requeue(self, at: float | None) -> None:
        with self._lock:
            self._requeue_at = at

    def due(self, now: float) -> bool:
        """A plan asked for a pass by now (wall clock): make it a full, urgent one."""
        with self._lock:
            if self._requeue_at is None or now < self._requeue_at:
                return False
            self._requeue_at = None
        self.urgent()
        return True
