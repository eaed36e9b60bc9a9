"""The controller's side of the bus: SUB to every agent, a DEALER per agent for snapshots.

Per-publisher sequence numbers: a gap (PUB drops past its high-water mark, or a slow join), a
restart (seq back to 1) or missing heartbeats make it ask for a snapshot (the zguide "Clone"
pattern); a silent publisher is marked stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from controller import metrics
from controller.bus.keys import Curve, curve_client
from controller.bus.wire import HEARTBEAT_SECONDS, HWM, MISSED_HEARTBEATS, SNAPSHOT_REQUEST, decode
from controller.logs import logger
from controller.model.errors import BusError
from controller.model.events import Envelope
from controller.threads import Background

STALL_SECONDS = 30.0  # the loop comes round every 0.2 s; this long without it is a stall
MAX_SOURCES = 64  # corosync has at most 32 nodes
# The largest message an agent sends is a snapshot: 5,000 domains with their disks is ~1 MB.
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class Peer:
    pub_endpoint: str
    snapshot_endpoint: str
    name: str | None = None  # the agent's node name, to find its CURVE public key
    secure: bool = True  # CURVE applies (when the subscriber has keys); inproc/loopback: no


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
        # One SUB socket per peer: what arrives on it comes from that peer (authenticated by its
        # CURVE key when named), so a peer can speak only for itself -- not for another node.
        self.subs: list[tuple[zmq.Socket[bytes], str | None]] = []
        self.dealers: list[zmq.Socket[bytes]] = []
        self.name_of: dict[int, str | None] = {}
        # With CURVE every peer is named (its key): only those names may publish.
        self.known = frozenset(p.name for p in peers if p.name)
        for peer in peers:
            key = (curve.peer_key(peer.name) if curve is not None and peer.name and peer.secure
                   else None)
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
            sub.rcvhwm = HWM
            sub.linger = 0
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            curve_client(sub, curve, key)
            sub.connect(peer.pub_endpoint)
            self.subs.append((sub, peer.name))
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
            dealer.linger = 0
            curve_client(dealer, curve, key)
            dealer.connect(peer.snapshot_endpoint)
            self.dealers.append(dealer)
            self.name_of[id(dealer)] = peer.name
        self._pending: dict[int, float] = {}
        self._bg = Background("bus-subscriber", self._run, stall_after=STALL_SECONDS)

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        for dealer in self.dealers:
            self._request(dealer, "connect")
        self._bg.start()

    def stop(self) -> None:
        self.close()

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

    def _run(self, stopping: threading.Event) -> None:
        poller = zmq.Poller()
        for sub, _ in self.subs:
            poller.register(sub, zmq.POLLIN)
        for d in self.dealers:
            poller.register(d, zmq.POLLIN)
        while not stopping.is_set():
            self._bg.beat()
            try:
                ready = dict(poller.poll(200))
                for sub, name in self.subs:
                    if sub in ready:
                        self._drain_sub(sub, name)
                for d in self.dealers:
                    if d in ready:
                        self._on_snapshot(d)
                self._check_heartbeats()
            except zmq.ContextTerminated:
                return
            except Exception:  # noqa: BLE001 - no message may make the controller deaf
                metrics.BUS_REJECTED.labels(reason="handler-error").inc()
                self.log.exception("bus_handling_failed")

    def _drain_sub(self, sock: zmq.Socket[bytes], name: str | None) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
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
            self._on_event(env, name)

    def _accepts(self, src: str) -> bool:
        """Named peers: their names only. Unnamed (loopback) peers: a bounded number of sources,
        so forged names cannot grow the metrics and the bookkeeping without end."""
        if self.known:
            ok, reason = src in self.known, "unknown-source"
        else:
            ok, reason = src in self.last_seq or len(self.last_seq) < MAX_SOURCES, "too-many-sources"
        if not ok:
            metrics.BUS_REJECTED.labels(reason=reason).inc()
        return ok

    def _from(self, env: Envelope, name: str | None) -> bool:
        """Whether the envelope may come from this peer: a named peer speaks for itself only."""
        if name is not None and env.source != name:
            metrics.BUS_REJECTED.labels(reason="forged-source").inc()
            self.log.warning("bus_forged_source", peer=name, claimed=env.source[:64])
            return False
        return self._accepts(env.source)

    def _on_event(self, env: Envelope, name: str | None = None) -> None:
        src = env.source
        if not self._from(env, name):
            return
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
        if not self._from(env, self.name_of.get(id(dealer))):
            return
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
        self._bg.stop(timeout=2)
        for sub, _ in self.subs:
            sub.close()
        for d in self.dealers:
            d.close()
