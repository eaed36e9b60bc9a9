"""Hostile input, measured: memory and latency under the floods of the issue "Hostile and
clumsy input" (defects 7-11). Prints figures; asserts nothing (the tests do).

    python bench/hostile.py
"""

from __future__ import annotations

import resource
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import zmq  # noqa: E402

from bench.plan import desired_yaml  # noqa: E402
from controller import metrics  # noqa: E402
from controller.app.http import StatusServer  # noqa: E402
from controller.bus.publisher import Publisher  # noqa: E402
from controller.bus.subscriber import Peer, Subscriber  # noqa: E402
from controller.bus.wire import encode  # noqa: E402
from controller.engine.desired_store import DesiredStore  # noqa: E402
from controller.engine.loop import Controller  # noqa: E402
from controller.engine.observe import Reading  # noqa: E402
from controller.model.desired import parse_desired  # noqa: E402
from controller.model.errors import DesiredStateError  # noqa: E402
from controller.model.events import Heartbeat, PacemakerSeen, envelope  # noqa: E402
from controller.model.observed import ClusterStatus  # noqa: E402
from controller.model.overview import StatusDoc  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def subscription_flood(n: int = 200_000) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, "kvm1", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    before = rss_mb()
    flood = ctx.socket(zmq.SUB)
    flood.connect(pub.pub_endpoint)
    for i in range(n):
        flood.setsockopt(zmq.SUBSCRIBE, f"libvirt.x{i}".encode())
    time.sleep(5)
    refused = metrics.REGISTRY.get_sample_value("kvm_warden_bus_rejected_total",
                                                {"reason": "subscription"}) or 0
    print(f"7  subscription flood: {n:,} distinct subscriptions -> agent RSS "
          f"{before:.0f} -> {rss_mb():.0f} MB (refused: {refused:.0f}, the rest dropped by "
          "ZeroMQ's high-water marks)")
    flood.close()
    pub.close()
    ctx.term()


def alias_bomb() -> None:
    bomb = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        bomb += f"{level}: &{level} [{', '.join(['*' + chr(ord(level) - 1)] * 10)}]\n"
    t = time.perf_counter()
    try:
        parse_desired(bomb)
    except DesiredStateError as exc:
        why = exc.problems[0].split(": ", 2)[-1][:60]
    took = time.perf_counter() - t
    text = desired_yaml(32, 5000)
    t = time.perf_counter()
    parse_desired(text)
    print(f"8  alias bomb ({len(bomb)} bytes, 10^7 nodes expanded): refused in {took:.2f} s "
          f"({why}...); a real 5,000-VM file ({len(text) / 1e6:.1f} MB): "
          f"{time.perf_counter() - t:.2f} s")


def stalled_http(n: int = 300) -> None:
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"))
    server.start()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
    samples = []
    for _ in range(50):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            r.read()
        samples.append(time.perf_counter() - t)
    samples.sort()
    for s in socks:
        s.close()
    print(f"9  {n} stalled HTTP clients: /metrics p50 {samples[25] * 1000:.1f} ms, "
          f"max {samples[-1] * 1000:.1f} ms (full concurrency figures: bench/scrape.py)")
    server.stop()


def alert_storm(seconds: float = 10.0) -> None:
    reads = []

    def source() -> Reading:
        reads.append(time.monotonic())
        return Reading((PacemakerSeen(status=ClusterStatus(with_quorum=True)),), b"<cib/>",
                       time.time())

    ctl = Controller(source=source, actuator=None,  # type: ignore[arg-type]
                     desired=DesiredStore(None, parse_desired("version: 1\n")))
    t = threading.Thread(target=ctl.run_forever, daemon=True)
    t.start()
    time.sleep(0.5)
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        ctl.mark(frozenset({f"alert:vm-{n}"}))
        n += 1
    ctl.stop()
    t.join(timeout=10)
    full = len([r for r in reads if r >= start])
    print(f"10 alert storm: {n:,} alerts in {seconds:.0f} s -> {full} full passes (crm_mon runs)")


def forged_sources(n: int = 20_000) -> None:
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.bind("tcp://127.0.0.1:*")
    router = ctx.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    sub = Subscriber(ctx, [Peer(raw.getsockopt_string(zmq.LAST_ENDPOINT),
                                router.getsockopt_string(zmq.LAST_ENDPOINT))], lambda e: None)
    sub.start()
    time.sleep(0.3)
    before = len(metrics.render())
    for i in range(n):
        raw.send_multipart([b"heartbeat", encode(envelope(f"n{i}", 1, Heartbeat(node=f"n{i}")))])
    time.sleep(3)
    time.sleep(metrics.RENDER_TTL_SECONDS)
    print(f"11 forged sources: {n:,} source names from one unnamed publisher -> "
          f"{len(sub.last_seq)} tracked, /metrics {before / 1e3:.0f} -> "
          f"{len(metrics.render()) / 1e3:.0f} KB")
    sub.close()
    raw.close()
    router.close()
    ctx.term()


if __name__ == "__main__":
    subscription_flood()
    alias_bomb()
    stalled_http()
    alert_storm()
    forged_sources()
