"""One long-lived background thread with the house's boilerplate: started once, watched by
/healthz (it dies or, with `stall_after`, stops coming round: the process is not healthy),
stopped on purpose without counting as dead, and given a stop event to wait on.

Every watcher (libvirt, corosync, mounts, the out-of-band judge, the alert receiver) runs on
one of these instead of its own copy of start/stop/health code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from controller import metrics


class Watcher(Protocol):
    """What the agent and the controller start and stop: a probe, a receiver, a judge."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Background:
    """`body(stopping)` runs on a daemon thread named `name` until it returns; it should
    return soon after `stopping` is set, and call `beat()` each round if `stall_after` is
    given."""

    def __init__(self, name: str, body: Callable[[threading.Event], None],
                 stall_after: float | None = None):
        self.stopping = threading.Event()
        self._stall_after = stall_after
        self._thread = threading.Thread(target=body, args=(self.stopping,), name=name,
                                        daemon=True)

    @property
    def name(self) -> str:
        return self._thread.name

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        metrics.watch_thread(self._thread, stall_after=self._stall_after)

    def beat(self) -> None:
        metrics.beat(self._thread.name)

    def stop(self, timeout: float = 5.0) -> None:
        metrics.forget_thread(self._thread)
        self.stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
