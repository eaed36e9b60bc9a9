"""One long-lived background thread with the house's boilerplate: started once, watched by
/healthz (it dies or, with `stall_after`, stops coming round: the process is not healthy),
stopped on purpose without counting as dead, and given a stop event to wait on.

Every long-lived thread (the probes, the bus's publisher and subscriber, the console relay,
the out-of-band judge, the alert receiver) runs on one of these instead of its own copy of
start/stop/health code, and every component that owns them is registered with one Lifecycle:
started in order, stopped in reverse, and answered for by /healthz.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from controller import metrics
from controller.logs import logger


class Watcher(Protocol):
    """What the agent and the controller start and stop: a probe, a receiver, a judge."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Component(Watcher, Protocol):
    """A long-lived component: its threads are its Backgrounds."""

    @property
    def backgrounds(self) -> tuple[Background, ...]: ...


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


class Lifecycle:
    """Every long-lived component of one process, registered once: `add` starts it, `close`
    stops them all in reverse order (one that fails to stop does not keep the others
    running), `unhealthy` names those with a thread that died or stalled -- what /healthz
    answers for (metrics.dead_threads, by thread name)."""

    def __init__(self) -> None:
        self._components: list[tuple[str, Component]] = []
        self.log = logger(component="lifecycle")

    def add(self, name: str, component: Component, started: bool = False) -> Component:
        """Register (and start, unless it already runs) a component."""
        if not started:
            component.start()
        self._components.append((name, component))
        return component

    @property
    def components(self) -> dict[str, Component]:
        return dict(self._components)

    def holds(self, component: Component) -> bool:
        return any(c is component for _, c in self._components)

    def unhealthy(self) -> list[str]:
        dead = {d.split(" (", 1)[0] for d in metrics.dead_threads()}
        return [name for name, c in self._components
                if any(bg.name in dead for bg in c.backgrounds)]

    def close(self) -> None:
        while self._components:
            name, component = self._components.pop()
            try:
                component.stop()
            except Exception:  # noqa: BLE001 - the others still stop
                self.log.exception("stop_failed", name=name)
