"""The bus-side processes: `agent`, `controller` (the subscriber side of `run`), and `watch`."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import zmq

from controller import logs
from controller.bus.agent import Agent, AgentConfig
from controller.bus.transport import Curve, Peer, Subscriber, start_authenticator
from controller.engine.store import Store, mark_stale
from controller.model.errors import WardenError
from controller.model.events import AlertReceived, BusError, Envelope, envelope, to_json


def snapshot_endpoint(endpoint: str) -> str:
    """Our convention: the snapshot ROUTER listens on the PUB port + 1 (or "<path>-snapshot")."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not port.isdigit():
            raise WardenError(f"{endpoint}: a tcp endpoint needs an explicit port")
        return f"tcp://{host}:{int(port) + 1}"
    return endpoint + "-snapshot"


def curve_from(keys: str | None, allow: str | None, endpoint: str, insecure: bool) -> Curve | None:
    if endpoint.startswith("inproc://"):
        return None
    if keys and allow:
        return Curve.load(Path(keys), Path(allow))
    if not insecure:
        raise WardenError("CURVE keys are required on the network: --keys SECRET_FILE --allow DIR "
                          "(kvm-warden keys generate DIR NAME), or --insecure for a lab")
    return None


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def run_agent(node: str, bind: str, libvirt_uri: str | None, corosync: bool, keys: str | None,
              allow: str | None, insecure: bool) -> int:
    logs.configure(sys.stderr)
    curve = curve_from(keys, allow, bind, insecure)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    auth = start_authenticator(ctx, curve) if curve else None
    agent = Agent(AgentConfig(node=node, pub_endpoint=bind, snapshot_endpoint=snapshot_endpoint(bind),
                              libvirt_uri=libvirt_uri, corosync=corosync), ctx, curve)
    agent.start()
    logs.logger(component="agent").info("agent_started", node=node, endpoint=bind,
                                         curve=curve is not None)
    try:
        _wait_for_signal()
    finally:
        agent.stop()
        if auth:
            auth.stop()
    return 0


def subscribe(ctx: zmq.Context[zmq.Socket[bytes]], agents: list[str], store: Store,
              keys: str | None, allow: str | None, insecure: bool) -> Subscriber:
    peers = []
    curve = None
    for spec in agents:
        name, _, endpoint = spec.rpartition("=")
        curve = curve_from(keys, allow, endpoint, insecure) or curve
        peers.append(Peer(endpoint, snapshot_endpoint(endpoint), name=name or None))
    sub = Subscriber(ctx, peers, store.fold, curve=curve,
                     on_stale=lambda src: store.update(lambda s: mark_stale(s, src)))
    sub.start()
    return sub


class AlertReceiver:
    """Receives the alert agent's datagrams; each alert is folded and wakes the loop.

    `endpoint`: a unix datagram socket path, or udp://HOST:PORT (for a controller on another
    node). Malformed datagrams are counted and dropped.
    """

    def __init__(self, ctx: object, endpoint: str, store: Store):
        self.store = store
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
            path.chmod(0o666)  # the agent runs as hacluster
            self.endpoint = str(path)
        self.sock.settimeout(0.2)
        self.last_sequence: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from controller import metrics

        while not self._stop.is_set():
            try:
                data = self.sock.recv(8192)
            except (TimeoutError, OSError):
                continue
            try:
                alert = parse_alert(data)
            except BusError as exc:
                metrics.BUS_REJECTED.labels(reason=exc.reason).inc()
                continue
            metrics.BUS_EVENTS.labels(kind="AlertReceived").inc()
            self._count_lost(alert)
            self.store.fold(envelope(f"alert:{alert.node}", alert.sequence or 0, alert))

    def _count_lost(self, alert: AlertReceived) -> None:
        """Pacemaker numbers alerts per node: a jump means the agent could not deliver some."""
        from controller import metrics

        if alert.sequence is None or not alert.node:
            return
        last = self.last_sequence.get(alert.node)
        if last is not None and alert.sequence > last + 1:
            metrics.ALERTS_DROPPED.inc(alert.sequence - last - 1)
        self.last_sequence[alert.node] = alert.sequence

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
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
                         sequence=int(seq) if seq.isdigit() else None)


def run_watch(agents: list[str], keys: str | None, allow: str | None, insecure: bool,
              count: int, alerts: str | None) -> int:
    """Print the live event stream as JSON lines (like `virsh event --loop`)."""
    logs.configure(sys.stderr)  # stdout carries only the events
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    printed = threading.Semaphore(0)
    lock = threading.Lock()

    def show(env: Envelope) -> None:
        with lock:
            sys.stdout.write(to_json(env).decode() + "\n")
            sys.stdout.flush()
        printed.release()

    class Printer(Store):
        def fold(self, env: Envelope) -> frozenset[str]:
            show(env)
            return frozenset()

    store = Printer()
    sub = subscribe(ctx, agents, store, keys, allow, insecure) if agents else None
    receiver = AlertReceiver(ctx, alerts, store) if alerts else None
    try:
        if count:
            for _ in range(count):
                printed.acquire()
        else:
            _wait_for_signal()
    except KeyboardInterrupt:
        pass
    finally:
        if sub:
            sub.close()
        if receiver:
            receiver.close()
    time.sleep(0.05)
    return 0
