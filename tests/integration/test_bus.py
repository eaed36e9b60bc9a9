"""The bus on real ZeroMQ sockets over loopback: order, loss, restarts, CURVE, garbage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from controller.bus.keys import Curve, generate_keys
from controller.bus.publisher import Publisher
from controller.bus.subscriber import Peer, Subscriber
from controller.metrics import REGISTRY
from controller.model.events import DomainSeen, Envelope, QuorumChanged, Snapshot
from controller.model.observed import Domain
from tests.waiting import wait_for

ANY = "tcp://127.0.0.1:*"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0




class Inbox:
    def __init__(self) -> None:
        self.items: list[Envelope] = []
        self.lock = threading.Lock()

    def __call__(self, env: Envelope) -> None:
        with self.lock:
            self.items.append(env)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.items]


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def quorum(n: int) -> QuorumChanged:
    return QuorumChanged(node="kvm1", quorate=True, expected_votes=n, total_votes=n)


def test_events_arrive_in_order_after_an_initial_snapshot(ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "kvm1", ANY, ANY)
    pub.publish(quorum(3))
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint)], inbox)
    sub.start()
    try:
        wait_for("'Snapshot' in inbox.kinds()", lambda: "Snapshot" in inbox.kinds(), 5.0, 0.02)
        snap = next(e for e in inbox.items if e.kind == "Snapshot")
        assert isinstance(snap.payload, Snapshot) and snap.payload.payloads == (quorum(3),)
        time.sleep(0.3)  # PUB/SUB joins asynchronously
        for n in range(4, 9):
            pub.publish(quorum(n))
        wait_for("inbox.kinds().count('QuorumChanged') == 5",
                 lambda: inbox.kinds().count("QuorumChanged") == 5, 5.0, 0.02)
        votes = [e.payload.expected_votes for e in inbox.items if e.kind == "QuorumChanged"]
        assert votes == [4, 5, 6, 7, 8]
    finally:
        sub.close()
        pub.close()


def test_a_lost_message_makes_the_subscriber_ask_for_a_snapshot(ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "kvm1", ANY, ANY)
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint)], inbox)
    sub.start()
    try:
        wait_for("'Snapshot' in inbox.kinds()", lambda: "Snapshot" in inbox.kinds(), 5.0, 0.02)
        time.sleep(0.3)
        pub.publish(quorum(1))
        wait_for("'QuorumChanged' in inbox.kinds()", lambda: "QuorumChanged" in inbox.kinds(), 5.0, 0.02)
        before = sample("kvm_warden_bus_resyncs_total", reason="gap")
        time.sleep(1.1)  # one snapshot request per second per publisher
        pub.skip(1)  # this sequence number is never sent: a loss
        pub.publish(quorum(2))
        wait_for("sample('kvm_warden_bus_resyncs_total', reason='gap') > be...",
                 lambda: sample("kvm_warden_bus_resyncs_total", reason="gap") > before, 5.0, 0.02)
        wait_for("inbox.kinds().count('Snapshot') == 2",
                 lambda: inbox.kinds().count("Snapshot") == 2, 5.0, 0.02)
        assert sub.last_seq["kvm1"] == pub.seq
    finally:
        sub.close()
        pub.close()


def test_a_restarted_agent_is_detected_and_resynced(ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "kvm1", ANY, ANY)
    endpoints = (pub.pub_endpoint, pub.snapshot_endpoint)
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(*endpoints)], inbox)
    sub.start()
    try:
        wait_for("'Snapshot' in inbox.kinds()", lambda: "Snapshot" in inbox.kinds(), 5.0, 0.02)
        time.sleep(0.3)
        for n in range(5):
            pub.publish(quorum(n))
        wait_for("sub.last_seq.get('kvm1') == 5", lambda: sub.last_seq.get("kvm1") == 5, 5.0, 0.02)
        pub.close()
        before = sample("kvm_warden_bus_resyncs_total", reason="restart")
        time.sleep(1.1)
        pub = Publisher(ctx, "kvm1", endpoints[0], endpoints[1])  # same node, seq from 1
        pub.publish(DomainSeen(node="kvm1", domains=(Domain(name="web01", state="running"),)))
        deadline = time.monotonic() + 5
        while sample("kvm_warden_bus_resyncs_total", reason="restart") == before and \
                time.monotonic() < deadline:
            pub.publish(quorum(9))  # the reconnect is asynchronous; keep talking until heard
            time.sleep(0.2)
        assert sample("kvm_warden_bus_resyncs_total", reason="restart") > before
        wait_for("any( e.kind == 'Snapshot' and any(isinstance(p, DomainSee...", lambda: any(
            e.kind == "Snapshot" and any(isinstance(p, DomainSeen) for p in e.payload.payloads)
            for e in inbox.items), 5.0, 0.02)
    finally:
        sub.close()
        pub.close()


def test_a_silent_publisher_is_marked_stale_and_recovers(ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "kvm1", ANY, ANY, heartbeat_seconds=0.2)
    stale: list[str] = []
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint)], inbox,
                     on_stale=stale.append, heartbeat_seconds=0.2)
    sub.start()
    try:
        wait_for("'Heartbeat' in inbox.kinds()", lambda: "Heartbeat" in inbox.kinds(), 5.0, 0.02)
        assert not stale
        for bg in pub.backgrounds:
            bg.stopping.set()  # heartbeats stop (the agent hangs) but the sockets stay
        wait_for("stale == ['kvm1']", lambda: stale == ["kvm1"], 3, 0.02)
        assert sample("kvm_warden_bus_publisher_stale", source="kvm1") == 1
        pub.publish(quorum(1))
        wait_for("sample('kvm_warden_bus_publisher_stale', source='kvm1') == 0",
                 lambda: sample("kvm_warden_bus_publisher_stale", source="kvm1") == 0, 5.0, 0.02)
    finally:
        sub.close()
        pub.close()


def test_curve_refuses_an_unknown_key_and_admits_a_known_one(ctx: zmq.Context,
                                                           tmp_path: Path) -> None:
    from controller.bus.keys import start_authenticator

    keys, agent_allow, ctl_allow = tmp_path / "keys", tmp_path / "agent-allow", tmp_path / "ctl"
    agent_pub, agent_sec = generate_keys(keys, "kvm1")
    ctl_pub, ctl_sec = generate_keys(keys, "controller")
    _, intruder_sec = generate_keys(keys, "intruder")
    agent_allow.mkdir()
    ctl_allow.mkdir()
    (agent_allow / "controller.key").write_bytes(ctl_pub.read_bytes())
    (ctl_allow / "kvm1.key").write_bytes(agent_pub.read_bytes())

    auth = start_authenticator(ctx, Curve.load(agent_sec, agent_allow))
    pub = Publisher(ctx, "kvm1", ANY, ANY, curve=Curve.load(agent_sec, agent_allow))
    good, bad = Inbox(), Inbox()
    peer = Peer(pub.pub_endpoint, pub.snapshot_endpoint, name="kvm1")
    refused_before = sample("kvm_warden_bus_auth_refused_total")
    ok_sub = Subscriber(ctx, [peer], good, curve=Curve.load(ctl_sec, ctl_allow))
    bad_sub = Subscriber(ctx, [peer], bad, curve=Curve.load(intruder_sec, ctl_allow))
    ok_sub.start()
    bad_sub.start()
    try:
        wait_for("'Snapshot' in good.kinds()", lambda: "Snapshot" in good.kinds(), 5.0, 0.02)
        time.sleep(0.3)
        pub.publish(quorum(3))
        wait_for("'QuorumChanged' in good.kinds()", lambda: "QuorumChanged" in good.kinds(), 5.0, 0.02)
        wait_for("sample('kvm_warden_bus_auth_refused_total') > refused_before",
                 lambda: sample("kvm_warden_bus_auth_refused_total") > refused_before, 5.0, 0.02)
        time.sleep(0.5)
        assert bad.kinds() == []
    finally:
        ok_sub.close()
        bad_sub.close()
        pub.close()
        auth.stop()


def test_garbage_on_the_bus_is_counted_and_dropped(ctx: zmq.Context) -> None:
    raw = ctx.socket(zmq.PUB)
    raw.bind(ANY)
    endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)
    router = ctx.socket(zmq.ROUTER)
    router.bind(ANY)
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(endpoint, router.getsockopt_string(zmq.LAST_ENDPOINT))], inbox)
    sub.start()
    before = {r: sample("kvm_warden_bus_rejected_total", reason=r)
              for r in ("frames", "undecodable", "version", "unknown-kind", "invalid")}
    try:
        time.sleep(0.3)
        raw.send_multipart([b"libvirt.kvm1"])
        raw.send_multipart([b"libvirt.kvm1", b"\xc1\xc1 not msgpack"])
        env = {"v": 99, "source": "x", "seq": 1, "sent_at": 0.0, "kind": "Heartbeat",
               "payload": {"type": "Heartbeat", "node": "x"}}
        raw.send_multipart([b"t", msgspec.msgpack.encode(env)])
        raw.send_multipart([b"t", msgspec.msgpack.encode({**env, "v": 1, "kind": "Nope"})])
        raw.send_multipart([b"t", msgspec.msgpack.encode({**env, "v": 1, "seq": "one"})])
        for reason in ("frames", "undecodable", "version", "unknown-kind", "invalid"):
            wait_for("sample('kvm_warden_bus_rejected_total', reason=r) > befor...",
                     lambda r=reason: sample("kvm_warden_bus_rejected_total", reason=r)
                            > before[r], 5.0, 0.02)
        assert inbox.kinds() == []
        assert all(bg.alive for bg in sub.backgrounds)
    finally:
        sub.close()
        raw.close()
        router.close()


def test_no_frame_and_no_failing_handler_makes_the_subscriber_deaf(ctx: zmq.Context) -> None:
    from controller.bus.publisher import Publisher
    from controller.metrics import dead_threads

    raw = ctx.socket(zmq.PUB)
    raw.bind(ANY)
    pub = Publisher(ctx, "kvm1", ANY, ANY, heartbeat_seconds=0.2)
    got: list[Envelope] = []
    calls = 0

    def deliver(env: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a handler")  # must not end the thread
        got.append(env)

    sub = Subscriber(ctx, [Peer(raw.getsockopt_string(zmq.LAST_ENDPOINT), pub.snapshot_endpoint),
                           Peer(pub.pub_endpoint, pub.snapshot_endpoint)], deliver,
                     heartbeat_seconds=0.2)
    sub.start()
    try:
        time.sleep(0.3)
        raw.send_multipart([b"t", bytes.fromhex("a2fffe")])  # a map whose key is not UTF-8
        pub.publish(QuorumChanged(node="kvm1", quorate=True))
        wait_for("any(e.kind == 'QuorumChanged' for e in got)",
                 lambda: any(e.kind == "QuorumChanged" for e in got), 5, 0.02)
        assert all(bg.alive for bg in sub.backgrounds) and "bus-subscriber" not in dead_threads()
    finally:
        sub.close()
        pub.close()
        raw.close()


def test_a_subscription_flood_is_refused_and_real_subscribers_still_hear(
        ctx: zmq.Context) -> None:
    pub = Publisher(ctx, "kvm1", ANY, ANY, heartbeat_seconds=0.2)
    flood = ctx.socket(zmq.SUB)
    flood.connect(pub.pub_endpoint)
    before = sample("kvm_warden_bus_rejected_total", reason="subscription")
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint)], inbox,
                     heartbeat_seconds=0.2)
    sub.start()
    try:
        for i in range(20_000):  # distinct topics: each would be a node in XPUB's trie
            flood.setsockopt(zmq.SUBSCRIBE, f"libvirt.x{i}".encode())
        # (past the high-water marks ZeroMQ itself drops the rest: memory stays bounded)
        wait_for("the flood refused",
                 lambda: sample("kvm_warden_bus_rejected_total", reason="subscription")
                 >= before + 1000, 20.0, 0.1)
        pub.publish(QuorumChanged(node="kvm1", quorate=True))
        wait_for("a real subscriber still hears", lambda: "QuorumChanged" in inbox.kinds(),
                 5.0, 0.02)
    finally:
        sub.close()
        flood.close()
        pub.close()


def test_a_named_peer_speaks_only_for_itself(ctx: zmq.Context) -> None:
    from controller.bus.wire import encode
    from controller.model.events import envelope

    raw = ctx.socket(zmq.PUB)
    raw.bind(ANY)
    router = ctx.socket(zmq.ROUTER)
    router.bind(ANY)
    inbox = Inbox()
    sub = Subscriber(ctx, [Peer(raw.getsockopt_string(zmq.LAST_ENDPOINT),
                                router.getsockopt_string(zmq.LAST_ENDPOINT), name="kvm1")], inbox)
    sub.start()
    before = sample("kvm_warden_bus_rejected_total", reason="forged-source")
    try:
        time.sleep(0.3)
        # kvm1's connection claims to be kvm2, with a listing that is kvm2's own: refused.
        raw.send_multipart([b"libvirt.kvm2", encode(envelope(
            "kvm2", 1, DomainSeen(node="kvm2", domains=(Domain(name="web01", state="running"),))))])
        raw.send_multipart([b"libvirt.kvm1", encode(envelope("kvm1", 1, DomainSeen(node="kvm1")))])
        wait_for("kvm1's own listing", lambda: "DomainSeen" in inbox.kinds(), 5.0, 0.02)
        assert sample("kvm_warden_bus_rejected_total", reason="forged-source") == before + 1
        assert [e.source for e in inbox.items] == ["kvm1"]
    finally:
        sub.close()
        raw.close()
        router.close()


def test_an_alert_on_another_node_reaches_the_controller_through_that_nodes_agent(
        ctx: zmq.Context, tmp_path: Path) -> None:
    """Pacemaker runs the alert agent on the node of the event: kvm3's agent receives it on
    its unix socket and publishes it; the controller's subscriber hears it as a push event,
    even though it names kvm1 (a fencing alert names its target, not its sender)."""
    import os
    import subprocess
    import sys

    from controller.bus.agent import Agent, AgentConfig

    sock = tmp_path / "alerts.sock"
    agent = Agent(AgentConfig(node="kvm3", pub_endpoint=ANY, snapshot_endpoint=ANY,
                              libvirt_uri=None, corosync=False, storage=False,
                              alerts=str(sock)), ctx)
    agent.start()
    inbox = Inbox()
    pub = agent.publisher
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint, name="kvm3")], inbox)
    sub.start()
    try:
        wait_for("the first snapshot", lambda: "Snapshot" in inbox.kinds(), 5.0, 0.02)
        time.sleep(0.3)  # PUB/SUB joins asynchronously
        script = Path(__file__).resolve().parents[2] / "probes/pacemaker/kvm_warden_alert.py"
        env = {**os.environ, "CRM_alert_recipient": str(sock), "CRM_alert_kind": "fencing",
               "CRM_alert_node": "kvm1", "CRM_alert_task": "reboot", "CRM_alert_rc": "0",
               "CRM_alert_desc": "Operation reboot of kvm1 by kvm3: OK",
               "CRM_alert_node_sequence": "7"}
        subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=10)
        wait_for("the alert", lambda: "AlertReceived" in inbox.kinds(), 5.0, 0.02)
        (env_,) = [e for e in inbox.items if e.kind == "AlertReceived"]
        assert env_.source == "kvm3" and env_.payload.kind == "fencing"  # type: ignore[union-attr]
        assert env_.payload.node == "kvm1" and env_.payload.task == "reboot"  # type: ignore[union-attr]
    finally:
        sub.close()
        agent.stop()
