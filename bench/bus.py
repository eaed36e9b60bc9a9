"""Benchmark: the bus over tcp loopback, CURVE off and on (issue 3).

For each mode: the highest rate a publisher reaches with every event folded into the store,
and publish -> fold latency (p50/p99) at paced rates of 1,000 and 10,000 events/s. Latency is
measured from the envelope's sent_at to the end of the fold in the subscriber's thread.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).parent.parent))

from controller.bus.keys import Curve, generate_keys, start_authenticator  # noqa: E402
from controller.bus.publisher import Publisher  # noqa: E402
from controller.bus.subscriber import Peer, Subscriber  # noqa: E402
from controller.engine.store import Store  # noqa: E402
from controller.model.events import DomainLifecycle, Envelope  # noqa: E402


def event(i: int) -> DomainLifecycle:
    return DomainLifecycle(node="kvm1", domain=f"vm{i % 5000:05d}", event="started",
                           detail="booted", state="running")


class Sink:
    def __init__(self) -> None:
        self.store = Store()
        self.latencies: list[float] = []
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, env: Envelope) -> None:
        self.store.fold(env)
        if env.kind == "DomainLifecycle":
            with self.lock:
                self.latencies.append(time.time() - env.sent_at)
                self.count += 1


def setup(ctx: zmq.Context, curve: bool, keys: Path):  # type: ignore[no-untyped-def]
    agent_curve = ctl_curve = auth = None
    if curve:
        generate_keys(keys, "kvm1", force=True)
        generate_keys(keys, "controller", force=True)
        allow_a, allow_c = keys / "allow-agent", keys / "allow-ctl"
        allow_a.mkdir(exist_ok=True)
        allow_c.mkdir(exist_ok=True)
        (allow_a / "controller.key").write_bytes((keys / "controller.key").read_bytes())
        (allow_c / "kvm1.key").write_bytes((keys / "kvm1.key").read_bytes())
        agent_curve = Curve.load(keys / "kvm1.key_secret", allow_a)
        ctl_curve = Curve.load(keys / "controller.key_secret", allow_c)
        auth = start_authenticator(ctx, agent_curve)
    pub = Publisher(ctx, "kvm1", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve=agent_curve)
    sink = Sink()
    sub = Subscriber(ctx, [Peer(pub.pub_endpoint, pub.snapshot_endpoint, name="kvm1")], sink,
                     curve=ctl_curve)
    sub.start()
    time.sleep(0.5)
    return pub, sub, sink, auth


def run_mode(curve: bool) -> None:
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        pub, sub, sink, auth = setup(ctx, curve, Path(tmp))
        label = "CURVE" if curve else "plain"
        # Maximum rate: 100,000 events as fast as publish() goes.
        n = 100_000
        t = time.perf_counter()
        for i in range(n):
            pub.publish(event(i))
        deadline = time.time() + 30
        while sink.count < n and time.time() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t
        print(f"{label:<6} max: {sink.count} of {n} folded in {elapsed:.2f} s = "
              f"{sink.count / elapsed:,.0f} events/s")
        for rate in (1_000, 10_000):
            with sink.lock:
                sink.latencies.clear()
                sink.count = 0
            total = rate * 2
            start = time.perf_counter()
            # Paced in 1 ms slots with sleep between them: a busy-wait would hold the GIL and
            # starve the subscriber thread, measuring the benchmark instead of the bus.
            per_slot = max(1, rate // 1000)
            for i in range(0, total, per_slot):
                for j in range(i, min(total, i + per_slot)):
                    pub.publish(event(j))
                delay = start + (i + per_slot) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            time.sleep(0.5)
            lat = sorted(sink.latencies)
            p50 = statistics.median(lat) * 1000
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000
            print(f"{label:<6} {rate:>6,} events/s for 2 s: {len(lat)}/{total} folded, "
                  f"p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        sub.close()
        pub.close()
        if auth:
            auth.stop()
    ctx.term()


if __name__ == "__main__":
    run_mode(curve=False)
    run_mode(curve=True)
