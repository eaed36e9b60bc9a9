"""The agent's side of the bus: PUB for events, a ROUTER that answers snapshot requests."""

from __future__ import annotations

import threading

import zmq

from controller import metrics
from controller.bus.keys import Curve, curve_server
from controller.bus.wire import HEARTBEAT_SECONDS, HWM, SNAPSHOT_REQUEST, encode, topic_for
from controller.model.events import (
    KIND_OF,
    Envelope,
    Heartbeat,
    Payload,
    Snapshot,
    Snapshotted,
    envelope,
    topics,
)
from controller.threads import Background

SNAPSHOT_STALL_SECONDS = 30.0  # its loop comes round every 0.1 s
MAX_CONTROL_MESSAGE = 1024  # what peers send an agent: subscriptions and snapshot requests


class Publisher:
    """The agent's side. Thread-safe `publish`; a background thread answers snapshot requests."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], node: str, pub_endpoint: str,
                 snapshot_endpoint: str, curve: Curve | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.node = node
        self.heartbeat_seconds = heartbeat_seconds
        self.seq = 0
        self._lock = threading.Lock()
        # The last payload of each kind the registry marks snapshotted: a controller that
        # connects later learns all of it from one snapshot.
        self._state: dict[type[Payload], Snapshotted] = {}
        # XPUB in manual mode: a subscription takes effect only when accepted here (accept()),
        # so a peer cannot grow the subscription trie with millions of distinct topics.
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_MANUAL, 1)
        self.pub.sndhwm = HWM
        self.pub.rcvhwm = 1000
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_MESSAGE)
        self.pub.linger = 0
        self.topics = frozenset({b""}) | topics(node)
        curve_server(self.pub, curve)
        self.pub.bind(pub_endpoint)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_MESSAGE)
        self.router.rcvhwm = 1000
        self.router.linger = 0
        curve_server(self.router, curve)
        self.router.bind(snapshot_endpoint)
        # With "tcp://127.0.0.1:*" the OS picks the ports; these say which.
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.snapshot_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._extra: list[str] = []
        # /healthz answers for both: an agent that no longer answers snapshots or beats is
        # not healthy, though its process lives. Serving from the start: a controller may
        # ask for a snapshot before the agent's probes have run.
        self._serving = Background("bus-snapshots", self._serve,
                                   stall_after=SNAPSHOT_STALL_SECONDS)
        self._beating = Background("bus-heartbeat", self._heartbeat)
        self._serving.start()
        self._beating.start()

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._serving, self._beating)

    def start(self) -> None:
        """Serving since it was made (its sockets are bound then): nothing to start."""

    def stop(self) -> None:
        self.close()

    def also_bind(self, pub_endpoint: str, snapshot_endpoint: str) -> None:
        """Serve a second pair of endpoints (`run`: inproc for itself, loopback tcp for watch)."""
        with self._lock:
            self.pub.bind(pub_endpoint)
            self.router.bind(snapshot_endpoint)

    def _accept_subscriptions(self) -> None:
        """Apply the (un)subscriptions peers sent, if they are for topics this agent publishes.
        Called with the lock held: the XPUB socket is used from one thread at a time."""
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] in (b"\x00", b"\x01") and msg[1:] in self.topics:
                self.pub.setsockopt(zmq.SUBSCRIBE if msg[:1] == b"\x01" else zmq.UNSUBSCRIBE,
                                    msg[1:])
            else:
                metrics.BUS_REJECTED.labels(reason="subscription").inc()

    def publish(self, payload: Payload) -> int:
        with self._lock:
            self._accept_subscriptions()
            self.seq += 1
            kind = KIND_OF.get(type(payload))
            if kind is not None and kind.snapshotted and isinstance(payload, Snapshotted):
                self._state[type(payload)] = payload
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

    def _serve(self, stopping: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not stopping.is_set():
            self._serving.beat()
            ready = dict(poller.poll(100))
            with self._lock:  # new subscribers are heard within a poll interval
                self._accept_subscriptions()
            if not ready:
                continue
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            if len(frames) == 2 and frames[1] == SNAPSHOT_REQUEST:
                # ROUTER sockets are used from this thread only; the snapshot is built under
                # the publish lock so its seq matches its content.
                self.router.send_multipart([frames[0], encode(self.snapshot())])

    def _heartbeat(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.heartbeat_seconds):
            self.publish(Heartbeat(node=self.node))

    def close(self) -> None:
        self._serving.stop(timeout=2)
        self._beating.stop(timeout=3)
        self.pub.close()
        self.router.close()
