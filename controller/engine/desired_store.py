"""The desired-state file with hot reload: an invalid file never replaces the last good one."""

from __future__ import annotations

import time
from pathlib import Path

from controller import metrics
from controller.logs import logger
from controller.model.actions import Finding
from controller.model.desired import DesiredState, load_desired
from controller.model.errors import DesiredStateError


class DesiredStore:
    """The desired-state file with hot reload; an invalid file never replaces the last good one."""

    def __init__(self, path: str | None, fallback: DesiredState | None = None):
        self.path = path
        self.current: DesiredState | None = fallback
        self.errors: tuple[str, ...] = ()
        self.generation = 0
        self.loaded_at: float | None = None  # wall clock: the file in force since
        self.rejected_at: float | None = None  # wall clock: invalid on disk since
        self._stamp: tuple[float, int] | None = None
        self.log = logger(component="desired")

    def poll(self) -> bool:
        """Reload if the file changed on disk; True when a new valid state took effect."""
        if self.path is None:
            if self.generation == 0 and self.current is not None:
                self.generation = 1
                self.loaded_at = time.time()
                metrics.DESIRED_VALID.set(1)
                metrics.DESIRED_GENERATION.set(1)
                return True
            return False
        try:
            st = Path(self.path).stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError as exc:
            stamp = (0.0, -1)
            if stamp != self._stamp:
                self._stamp = stamp
                self._reject((f"{self.path}: cannot read: {exc.strerror}",))
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            new = load_desired(self.path)
        except DesiredStateError as exc:
            self._reject(exc.problems)
            return False
        self.current = new
        self.errors = ()
        self.rejected_at = None
        self.loaded_at = time.time()
        self.generation += 1
        metrics.DESIRED_VALID.set(1)
        metrics.DESIRED_GENERATION.set(self.generation)
        metrics.DESIRED_RELOAD_TIME.set(time.time())
        self.log.info("desired_state_loaded", path=self.path, generation=self.generation,
                      vms=len(new.vms))
        return True

    def _reject(self, problems: tuple[str, ...]) -> None:
        self.errors = problems
        self.rejected_at = time.time()
        metrics.DESIRED_VALID.set(0)
        self.log.error("desired_state_rejected", path=self.path, problems=list(problems),
                       kept_generation=self.generation)


def invalid_finding(store: DesiredStore) -> Finding | None:
    """A rejected file is loud: a critical finding with its problems, saying what is in
    force instead (shown by status, /status, the web view's banner and run's output)."""
    if not store.errors:
        return None
    since = time.strftime("%H:%M:%S", time.localtime(store.rejected_at or time.time()))
    kept = ("the last good file stays in force (generation "
            f"{store.generation}, loaded at "
            f"{time.strftime('%H:%M:%S', time.localtime(store.loaded_at or 0))})"
            if store.current is not None else "no valid desired state: nothing is reconciled")
    return Finding(reconciler="desired", kind="desired-invalid", severity="critical",
                   subject=store.path or "desired", urgent=True,
                   message=f"{store.path} is invalid since {since}: "
                           + "; ".join(store.errors[:5])
                           + (f" (+{len(store.errors) - 5} more)" if len(store.errors) > 5
                              else "") + f"; {kept}")
