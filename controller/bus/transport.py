"""The ZeroMQ bus: agents publish typed events; the controller subscribes (zguide "Clone").

- Agent: PUB for events `[topic, envelope]` and a ROUTER that answers "SNAPSHOT" with the
  agent's whole current state, stamped with its current sequence number.
- Controller: SUB to every agent plus a DEALER per agent for snapshots. Per-publisher sequence
  numbers: a gap (PUB drops past its high-water mark, or a slow join), a restart (seq back to
  1) or missing heartbeats make it ask for a snapshot; a silent publisher is marked stale.
- CURVE with ZAP against an allow-list directory of public keys; plain tcp only when asked for
  (`--insecure`), and inproc needs none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from controller import metrics
from controller.logs import logger
from controller.model.events import (
    BusError,
    DomainSeen,
    Envelope,
    Heartbeat,
    MountsSeen,
    Payload,
    QuorumChanged,
    Snapshot,
    decode,
    encode,
    envelope,
)

HWM = 10_000  # messages; past it PUB drops (and the subscriber resyncs), memory stays bounded
HEARTBEAT_SECONDS = 2.0
MISSED_HEARTBEATS = 3
SNAPSHOT_REQUEST = b"SNAPSHOT"


@dataclass(frozen=True)
class Curve:
    """Key material for one side: its own key pair and the directory of peers it trusts."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, secret_file: Path, allow_dir: Path) -> Curve:
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key")
        return cls(public, secret, allow_dir)

    def peer_key(self, name: str) -> bytes:
        public, _ = zmq.auth.load_certificate(str(self.allow_dir / f"{name}.key"))
        return public


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


class _AllowList:
    """ZAP credentials provider: a client key must be in the allow-list directory."""

    def __init__(self, allow_dir: Path):
        self.allow_dir = allow_dir
        self.log = logger(component="bus-auth")

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = set(zmq.auth.load_certificates(str(self.allow_dir)).keys())
        ok = key in allowed
        if not ok:
            metrics.BUS_AUTH_REFUSED.inc()
            self.log.warning("curve_key_refused", key=key.decode(errors="replace"))
        return ok


def start_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], curve: Curve) -> ThreadAuthenticator:
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(curve.allow_dir))
    return auth


def _server(sock: zmq.Socket[bytes], curve: Curve | None) -> None:
    if curve is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_server = True


def _client(sock: zmq.Socket[bytes], curve: Curve | None, server_key: bytes | None) -> None:
    if curve is not None and server_key is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_serverkey = server_key


def topic_for(payload: Payload, node: str) -> bytes:
    prefix = {
        "DomainLifecycle": "libvirt", "DomainSeen": "libvirt", "QuorumChanged": "corosync",
        "MountsSeen": "storage", "Heartbeat": "heartbeat", "AlertReceived": "pacemaker",
    }.get(type(payload).__name__, "other")
    return f"{prefix}.{node}".encode() if prefix != "pacemaker" else b"pacemaker"


class Publisher:
    """The agent's side. Thread-safe `publish`; a background thread answers snapshot requests."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], node: str, pub_endpoint: str,
                 snapshot_endpoint: str, curve: Curve | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.node = node
        self.heartbeat_seconds = heartbeat_seconds
        self.seq = 0
        self._lock = threading.Lock()
        self._state: dict[str, DomainSeen | QuorumChanged | MountsSeen] = {}
        self.pub = ctx.socket(zmq.PUB)
        self.pub.sndhwm = HWM
        self.pub.linger = 0
        _server(self.pub, curve)
        self.pub.bind(pub_endpoint)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        _server(self.router, curve)
        self.router.bind(snapshot_endpoint)
        # With "tcp://127.0.0.1:*" the OS picks the ports; these say which.
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.snapshot_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._extra: list[str] = []
        self._thread = threading.Thread(target=self._serve, name="bus-snapshots", daemon=True)
        self._thread.start()
        self._hb = threading.Thread(target=self._heartbeat, name="bus-heartbeat", daemon=True)
        self._hb.start()

    def also_bind(self, pub_endpoint: str, snapshot_endpoint: str) -> None:
        """Serve a second pair of endpoints (`run`: inproc for itself, loopback tcp for watch)."""
        with self._lock:
            self.pub.bind(pub_endpoint)
            self.router.bind(snapshot_endpoint)

    def publish(self, payload: Payload) -> int:
        with self._lock:
            self.seq += 1
            if isinstance(payload, DomainSeen | QuorumChanged | MountsSeen):
                self._state[type(payload).__name__] = payload
            self.pub.send_multipart([topic_for(payload, self.node),
                                     encode(envelope(self.node, self.seq, payload))])
            metrics.BUS_PUBLISHED.labels(kind=type(payload).__name__).inc()
            return self.seq

    def skip(self, n: int = 1) -> None:
        """Burn sequence numbers without sending (tests simulate a lost message with this)."""
        with self._lock:
            self.seq += n

    def snapshot(self) -> Envelope:
        with self._lock:
            return envelope(self.node, self.seq,
                            Snapshot(node=self.node, payloads=tuple(self._state.values())))

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self._stop.is_set():
            if not dict(poller.poll(200)):
                continue
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            if len(frames) == 2 and frames[1] == SNAPSHOT_REQUEST:
                # ROUTER sockets are used from this thread only; the snapshot is built under
                # the publish lock so its seq matches its content.
                self.router.send_multipart([frames[0], encode(self.snapshot())])

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.publish(Heartbeat(node=self.node))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._hb.join(timeout=3)
        self.pub.close()
        self.router.close()


@dataclass
class Peer:
    pub_endpoint: str
    snapshot_endpoint: str
    name: str | None = None  # the agent's node name, to find its CURVE public key


class Subscriber:
    """The controller's side: delivers envelopes in order per source, resyncing on loss."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], peers: list[Peer],
                 deliver: Callable[[Envelope], object], curve: Curve | None = None,
                 on_stale: Callable[[str], None] | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.deliver = deliver
        self.heartbeat_seconds = heartbeat_seconds
        self.on_stale = on_stale
        self.last_seq: dict[str, int] = {}
        self.last_seen: dict[str, float] = {}
        self.stale: set[str] = set()
        self.dealer_of: dict[str, zmq.Socket[bytes]] = {}
        self.log = logger(component="bus")
        self.sub = ctx.socket(zmq.SUB)
        self.sub.rcvhwm = HWM
        self.sub.linger = 0
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.dealers: list[zmq.Socket[bytes]] = []
        for peer in peers:
            key = curve.peer_key(peer.name) if curve is not None and peer.name else None
            sub_for_peer = self.sub
            _client(sub_for_peer, curve, key)
            sub_for_peer.connect(peer.pub_endpoint)
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 0
            _client(dealer, curve, key)
            dealer.connect(peer.snapshot_endpoint)
            self.dealers.append(dealer)
        self._pending: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-subscriber", daemon=True)

    def start(self) -> None:
        for dealer in self.dealers:
            self._request(dealer, "connect")
        self._thread.start()

    def _request(self, dealer: zmq.Socket[bytes], reason: str) -> None:
        now = time.monotonic()
        if now - self._pending.get(id(dealer), 0.0) < 1.0:
            return  # one outstanding request per second per publisher is enough
        self._pending[id(dealer)] = now
        metrics.BUS_RESYNCS.labels(reason=reason).inc()
        try:
            dealer.send(SNAPSHOT_REQUEST, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet: the heartbeat check will ask again

    def resync(self, source: str, reason: str) -> None:
        dealer = self.dealer_of.get(source)
        if dealer is not None:
            self._request(dealer, reason)
        else:  # we never learned which agent this is: ask all of them
            for d in self.dealers:
                self._request(d, reason)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        for d in self.dealers:
            poller.register(d, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(200))
            if self.sub in ready:
                self._drain_sub()
            for d in self.dealers:
                if d in ready:
                    self._on_snapshot(d)
            self._check_heartbeats()

    def _drain_sub(self) -> None:
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                metrics.BUS_REJECTED.labels(reason="frames").inc()
                continue
            try:
                env = decode(frames[1])
            except BusError as exc:
                metrics.BUS_REJECTED.labels(reason=exc.reason).inc()
                self.log.warning("bus_rejected", reason=exc.reason, error=str(exc))
                continue
            self._on_event(env)

    def _on_event(self, env: Envelope) -> None:
        src = env.source
        self.last_seen[src] = time.monotonic()
        if src in self.stale:
            self.stale.discard(src)
            metrics.BUS_STALE.labels(source=src).set(0)
        last = self.last_seq.get(src)
        if last is None:
            self.resync(src, "unknown-publisher")
        elif env.seq <= last:
            if env.seq < last:  # seq back to the start: the agent restarted
                self.log.info("publisher_restarted", source=src, seq=env.seq, last=last)
                self.last_seq[src] = env.seq
                self.resync(src, "restart")
            return  # a duplicate, or already in a snapshot we applied
        elif env.seq > last + 1:
            self.log.info("bus_gap", source=src, expected=last + 1, got=env.seq)
            self.resync(src, "gap")
        self.last_seq[src] = max(env.seq, last or 0)
        metrics.BUS_EVENTS.labels(kind=env.kind).inc()
        self.deliver(env)

    def _on_snapshot(self, dealer: zmq.Socket[bytes]) -> None:
        try:
            data = dealer.recv(zmq.NOBLOCK)
            env = decode(data)
        except zmq.Again:
            return
        except BusError as exc:
            metrics.BUS_REJECTED.labels(reason=exc.reason).inc()
            return
        self._pending.pop(id(dealer), None)
        self.dealer_of[env.source] = dealer
        last = self.last_seq.get(env.source)
        if last is not None and env.seq < last:
            # Events newer than this snapshot were already delivered (the reply raced them):
            # applying it would step back in time. Ask again; the next one is newer.
            self._request(dealer, "stale-snapshot")
            return
        self.last_seq[env.source] = env.seq
        self.last_seen[env.source] = time.monotonic()
        metrics.BUS_EVENTS.labels(kind=env.kind).inc()
        self.deliver(env)

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        limit = self.heartbeat_seconds * MISSED_HEARTBEATS
        for src, seen in self.last_seen.items():
            if now - seen > limit:
                if src not in self.stale:
                    self.stale.add(src)
                    metrics.BUS_STALE.labels(source=src).set(1)
                    self.log.warning("publisher_stale", source=src, silent_s=round(now - seen, 1))
                    if self.on_stale:
                        self.on_stale(src)
                self.resync(src, "heartbeat")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sub.close()
        for d in self.dealers:
            d.close()
