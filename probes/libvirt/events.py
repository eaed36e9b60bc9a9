"""Watching one libvirtd: lifecycle and fault events, plus full listings, as bus payloads.

libvirt's default event loop runs on its own thread; callbacks only translate and queue (they
must not call back into libvirt). A worker thread owns the connection: it lists domains
(after each event burst, after every reconnect, and periodically), notices a dead libvirtd
(close callback, keepalive) and reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from controller import metrics
from controller.logs import logger
from controller.model.errors import ToolError
from controller.model.events import DomainLifecycle, DomainSeen
from controller.threads import Background
from probes.libvirt.domains import STATES, host_info, list_domains

# virDomainEventType and its details (libvirt-domain.h), named as `virsh event` names them.
EVENTS = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
          "pmsuspended", "crashed")
DETAILS: dict[str, tuple[str, ...]] = {
    "defined": ("added", "updated", "renamed", "from-snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from-snapshot", "wakeup"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "from-snapshot",
                  "api-error", "postcopy", "postcopy-failed"),
    "resumed": ("unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                "from-snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "pmsuspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
}
WATCHDOG = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "inject-nmi")
IO_ERROR = ("none", "pause", "report")
# A suspended event's detail -> the paused reason a listing would give (PAUSED_REASONS).
SUSPEND_REASON = {"paused": "user", "migrated": "migration", "ioerror": "ioerror",
                  "watchdog": "watchdog", "restored": "save", "from-snapshot": "from-snapshot",
                  "api-error": "api-error", "postcopy": "postcopy",
                  "postcopy-failed": "postcopy-failed"}

_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """libvirt's default event implementation, once per process, on a daemon thread."""
    import libvirt

    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; ours are handled and logged.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        loop = threading.Thread(target=run, name="libvirt-events", daemon=True)
        loop.start()
        metrics.watch_thread(loop)  # process-wide: no libvirt event arrives once it is gone
        _loop_started = True


def lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    name = EVENTS[event] if 0 <= event < len(EVENTS) else f"event-{event}"
    details = DETAILS.get(name, ())
    return name, details[detail] if 0 <= detail < len(details) else str(detail)


class LibvirtWatcher:
    def __init__(self, node: str, uri: str, publish: Callable[[Any], object],
                 listing_seconds: float = 30.0, max_backoff: float = 30.0):
        self.node = node
        self.uri = uri
        self.publish = publish
        self.listing_seconds = listing_seconds
        self.max_backoff = max_backoff
        self.connected = False
        self.log = logger(component="libvirt", node=node, uri=uri)
        self._conn: Any = None
        self._work: queue.Queue[str] = queue.Queue(maxsize=1000)
        self._bg = Background("libvirt-probe", lambda _: self._run())
        self._stop = self._bg.stopping

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        start_event_loop()
        self._bg.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue("stop")
        self._bg.stop()
        self._close()

    def _queue(self, what: str) -> None:
        try:
            self._work.put_nowait(what)
        except queue.Full:
            pass  # a listing is already due; it will show the latest state

    # -- libvirt callbacks (event-loop thread): translate, publish, queue; no libvirt calls --
    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        name, det = lifecycle_names(event, detail)
        state = {"started": "running", "resumed": "running", "suspended": "paused",
                 "stopped": "shutoff", "crashed": "crashed", "pmsuspended": "pmsuspended"}.get(
                     name, "")
        reason = SUSPEND_REASON.get(det, "unknown") if name == "suspended" else ""
        self._publish_event(dom, name, det, state, reason)
        self._queue("list")

    def _reboot(self, conn: Any, dom: Any, opaque: Any) -> None:
        self._publish_event(dom, "reboot", "", "running")

    def _watchdog(self, conn: Any, dom: Any, action: int, opaque: Any) -> None:
        self._publish_event(dom, "watchdog", WATCHDOG[action] if action < len(WATCHDOG)
                            else str(action), "")
        self._queue("list")

    def _io_error(self, conn: Any, dom: Any, src: str, dev: str, action: int, reason: str,
                  opaque: Any) -> None:
        self._publish_event(dom, "io-error", f"{dev} {reason}".strip(), "")
        self._queue("list")

    def _control_error(self, conn: Any, dom: Any, opaque: Any) -> None:
        self._publish_event(dom, "control-error", "", "")

    def _job_completed(self, conn: Any, dom: Any, params: Any, opaque: Any) -> None:
        self._publish_event(dom, "job-completed", "", "")

    def _closed(self, conn: Any, reason: int, opaque: Any) -> None:
        self.log.warning("libvirt_connection_closed", reason=reason)
        self._queue("reconnect")

    def _publish_event(self, dom: Any, event: str, detail: str, state: str,
                       reason: str = "") -> None:
        try:
            name, uuid = dom.name(), dom.UUIDString()
        except Exception:  # noqa: BLE001 - a domain object can fail on a dying connection
            return
        self.publish(DomainLifecycle(node=self.node, domain=name, uuid=uuid, event=event,
                                     detail=detail, state=state, reason=reason))

    # -- worker thread: owns the connection --
    def _run(self) -> None:
        while not self._stop.is_set():
            self._connect_with_backoff()
            if self._stop.is_set():
                return
            self._list()
            next_listing = time.monotonic() + self.listing_seconds
            while not self._stop.is_set():
                try:  # a second at most: its stop event is seen without a queued "stop"
                    what = self._work.get(timeout=min(1.0, max(0.1, next_listing
                                                               - time.monotonic())))
                except queue.Empty:
                    if time.monotonic() < next_listing:
                        continue
                    what = "list"
                if what == "stop":
                    return
                if what == "reconnect" or not self._alive():
                    self._disconnected()
                    break
                time.sleep(0.05)  # let a burst of events become one listing
                while not self._work.empty():
                    extra = self._work.get_nowait()
                    if extra in ("stop", "reconnect"):
                        self._work.put_nowait(extra)
                        break
                if self._list():
                    next_listing = time.monotonic() + self.listing_seconds

    def _alive(self) -> bool:
        try:
            return bool(self._conn is not None and self._conn.isAlive())
        except Exception:  # noqa: BLE001
            return False

    def _connect_with_backoff(self) -> None:
        import libvirt

        def failed(_: object) -> None:  # each failed connect counts: a libvirtd that is away shows
            metrics.PROBE_ERRORS.labels(probe="libvirt").inc()

        for attempt in Retrying(retry=retry_if_exception_type(libvirt.libvirtError),
                                wait=wait_random_exponential(multiplier=0.5, max=self.max_backoff),
                                before_sleep=failed):
            with attempt:
                if self._stop.is_set():
                    return
                self._connect()

    def _connect(self) -> None:
        import libvirt

        conn = libvirt.openReadOnly(self.uri)
        try:
            conn.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass  # the test:/// driver has no keepalive
        conn.registerCloseCallback(self._closed, None)
        for ev, cb in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._watchdog),
            (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self._io_error),
            (libvirt.VIR_DOMAIN_EVENT_ID_CONTROL_ERROR, self._control_error),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed),
        ):
            try:
                conn.domainEventRegisterAny(None, ev, cb, None)
            except libvirt.libvirtError:
                pass  # a driver without this event still gives us the others
        self._conn = conn
        self.connected = True
        self.log.info("libvirt_connected")

    def _list(self) -> bool:
        try:
            domains = list_domains(self.uri, conn=self._conn)
        except ToolError as exc:
            self.log.warning("libvirt_list_failed", error=str(exc))
            self._queue("reconnect")
            return False
        self.publish(DomainSeen(node=self.node, connected=True,
                                domains=tuple(domains[k] for k in sorted(domains)),
                                host=host_info(self.uri, conn=self._conn)))
        return True

    def _disconnected(self) -> None:
        self.connected = False
        self._close()
        self.publish(DomainSeen(node=self.node, connected=False))

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


__all__ = ["LibvirtWatcher", "STATES", "lifecycle_names"]
