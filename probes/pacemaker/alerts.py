"""Pacemaker alerts as a push source: the datagrams `kvm-warden-alert` sends, received and parsed.

Pacemaker runs the alert agent on the node where an event happened, as `hacluster`, with the
event in `CRM_alert_*` variables; the agent forwards them as one JSON datagram. Malformed
datagrams are counted (`kvm_warden_bus_rejected_total{reason}`) and dropped.
"""

from __future__ import annotations

import grp
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from controller import metrics
from controller.logs import logger
from controller.model.errors import BusError
from controller.model.events import AlertReceived, Envelope, envelope
from controller.threads import Background

MAX_ALERT_NODES = 64  # corosync has at most 32 nodes; forged names cannot grow this
MAX_ALERT_GAP = 10_000


class AlertReceiver:
    """Receives the alert agent's datagrams; each alert is folded and wakes the loop.

    `endpoint`: a unix datagram socket path, or udp://HOST:PORT (for a controller on another
    node). Malformed datagrams are counted and dropped.
    """

    def __init__(self, endpoint: str, deliver: Callable[[Envelope], object]):
        self.deliver = deliver
        if endpoint.startswith("udp://"):
            host, _, port = endpoint[6:].rpartition(":")
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, int(port)))
            self.endpoint = f"udp://{host}:{self.sock.getsockname()[1]}"
        else:
            path = Path(endpoint)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            # Pacemaker runs the alert agent as hacluster: its group may send, nobody else.
            try:
                os.chown(path, -1, grp.getgrnam("haclient").gr_gid)
                path.chmod(0o660)
            except (KeyError, PermissionError):
                path.chmod(0o600)  # no Pacemaker here (tests): only the owner
            self.endpoint = str(path)
        self.sock.settimeout(0.2)
        self.last_sequence: dict[str, int] = {}
        # It comes round every 0.2 s: 30 s without, it is stuck.
        self._bg = Background("alerts", lambda _: self._run(), stall_after=30.0)
        self._stop = self._bg.stopping
        self._bg.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._bg.beat()
            try:
                data = self.sock.recv(8192)
            except (TimeoutError, OSError):
                continue
            try:
                alert = parse_alert(data)
                metrics.BUS_EVENTS.labels(kind="AlertReceived").inc()
                self._count_lost(alert)
                self.deliver(envelope(f"alert:{alert.node}", alert.sequence or 0, alert))
            except BusError as exc:
                metrics.BUS_REJECTED.labels(reason=exc.reason).inc()
            except Exception:  # noqa: BLE001 - no datagram may end the receiver
                metrics.BUS_REJECTED.labels(reason="handler-error").inc()
                logger(component="alerts").exception("alert_handling_failed")

    def _count_lost(self, alert: AlertReceived) -> None:
        """Pacemaker numbers alerts per node: a jump means the agent could not deliver some."""
        if alert.sequence is None or not alert.node:
            return
        last = self.last_sequence.pop(alert.node, None)
        # A jump larger than any burst Pacemaker could make is a restart or a forgery, not loss.
        if last is not None and last + 1 < alert.sequence <= last + MAX_ALERT_GAP:
            metrics.ALERTS_DROPPED.inc(alert.sequence - last - 1)
        self.last_sequence[alert.node] = alert.sequence  # re-inserted: the dict is oldest-first
        while len(self.last_sequence) > MAX_ALERT_NODES:
            del self.last_sequence[next(iter(self.last_sequence))]

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        """Listening since it was made (its socket is bound then): nothing to start."""

    def stop(self) -> None:
        self.close()

    def close(self) -> None:
        self._bg.stop(timeout=2)
        self.sock.close()


def parse_alert(data: bytes) -> AlertReceived:
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BusError("alert-undecodable") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("kind"), str) or not msg["kind"]:
        raise BusError("alert-invalid")

    def text(key: str) -> str:
        v = msg.get(key, "")
        return v[:1000] if isinstance(v, str) else ""

    seq = text("node_sequence")
    return AlertReceived(kind=text("kind"), node=text("node"), resource=text("rsc"),
                         task=text("task"), rc=text("rc"), desc=text("desc"),
                         status=text("status"), target_rc=text("target_rc"),
                         timestamp=text("timestamp_epoch"),
                         sequence=int(seq) if seq.isascii() and seq.isdigit() and len(seq) <= 18
                         else None)
