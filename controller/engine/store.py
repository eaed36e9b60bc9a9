"""The state store: `fold(state, envelope) -> (state, changed)`, pure.

Every event makes a new ObservedState (frozen, so readers never see half an update) and names
the objects it changed, which the loop turns into its dirty set. Each kind's fold and
freshness key (`observed_at[SourceKey("libvirt", "kvm1")]`) are declared in
controller/model/events.py (OBSERVATIONS); a publisher that went silent is listed in `stale`: its data
is kept but not trusted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import msgspec

from controller.model.events import Dirty, Envelope, Observation
from controller.model.events import fold as fold_observation
from controller.model.observed import ObservedState


def fold(state: ObservedState, env: Envelope) -> tuple[ObservedState, frozenset[Dirty]]:
    return fold_observation(state, env.payload, env.source, env.sent_at)


def mark_stale(state: ObservedState, source: str) -> ObservedState:
    return msgspec.structs.replace(state, stale=state.stale | {source})


class Store:
    """The current ObservedState behind a lock; listeners hear which objects changed."""

    def __init__(self, initial: ObservedState | None = None):
        self._state = initial or ObservedState()
        self._lock = threading.Lock()
        self.listeners: list[Callable[[frozenset[Dirty]], None]] = []
        # Hear every envelope itself (the out-of-band watcher needs the event, not its effect).
        self.taps: list[Callable[[Envelope], None]] = []

    @property
    def state(self) -> ObservedState:
        return self._state

    def fold(self, env: Envelope) -> frozenset[Dirty]:
        with self._lock:
            self._state, changed = fold(self._state, env)
        for tap in self.taps:
            tap(env)
        if changed:
            for listener in self.listeners:
                listener(changed)
        return changed

    def observe(self, observations: Iterable[Observation], source: str, at: float) -> None:
        """Fold the controller's own readings (Pacemaker, a local libvirt, a simulated cluster).

        Listeners are not told: the pass that took the reading is the one that plans on it."""
        with self._lock:
            for obs in observations:
                self._state, _ = fold_observation(self._state, obs, source, at)

    def update(self, fn: Callable[[ObservedState], ObservedState]) -> None:
        with self._lock:
            self._state = fn(self._state)
