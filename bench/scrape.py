"""Benchmark: /metrics and /status with 5,000 VMs in the state, at 10 requests/s (issue 6);
/metrics and /api/vms with 50 concurrent clients, without and with 1,000 slow connections.

The controller serves both from the state it already holds (no crm_mon per scrape). Targets:
/metrics p99 <= 50 ms, /status p99 <= 100 ms.
"""

from __future__ import annotations

import resource
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.plan import cib_file, desired_yaml, observed_from  # noqa: E402
from controller import metrics  # noqa: E402
from controller.app.http import StatusServer  # noqa: E402
from controller.app.web import WebView  # noqa: E402
from controller.engine.desired_store import DesiredStore  # noqa: E402
from controller.engine.loop import Controller, PassResult, Published  # noqa: E402
from controller.engine.observe import Reading  # noqa: E402
from controller.model.desired import (
    DesiredState,  # noqa: E402
    parse_desired,  # noqa: E402
)
from controller.model.index import build_index  # noqa: E402
from controller.model.observed import ObservedState  # noqa: E402
from controller.model.overview import (  # noqa: E402
    DesiredInfo,
    StatusDoc,
    VmRow,  # noqa: E402
    vm_rows,
)


def main() -> None:
    nodes, vms = 32, 5000
    observed = observed_from(cib_file(nodes, vms))
    desired = parse_desired(desired_yaml(nodes, vms))
    rows = vm_rows(observed, desired)
    metrics.update_cluster(observed)
    metrics.update_vms(rows, build_index(observed).fail_counts)
    doc = StatusDoc(vms=rows, desired=DesiredInfo(path="bench", generation=1, valid=True))
    server = StatusServer("127.0.0.1", 0, lambda: doc, lambda: (True, "ready"))
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    for path, target in (("/metrics", 50), ("/status", 100)):
        samples = []
        size = 0
        start = time.perf_counter()
        for i in range(200):  # 10 per second for 20 s
            t = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=10) as r:
                size = len(r.read())
            samples.append(time.perf_counter() - t)
            delay = start + (i + 1) / 10 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        samples.sort()
        p99 = samples[int(len(samples) * 0.99) - 1] * 1000
        print(f"{path:<9} {vms} VMs, 10 req/s x 20 s: p50 {statistics.median(samples) * 1000:.1f}"
              f" ms, p99 {p99:.1f} ms (target <= {target} ms), {size / 1e6:.2f} MB per response")
    # 50 scrapers at once (issue "Hostile and clumsy input": p99 <= 100 ms), 10 rounds each.
    from concurrent.futures import ThreadPoolExecutor

    def scrape(_: int) -> float:
        t = time.perf_counter()
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            r.read()
        return time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=50) as pool:
        samples = sorted(pool.map(scrape, range(500)))
    p99 = samples[int(len(samples) * 0.99) - 1] * 1000
    print(f"/metrics  {vms} VMs, 50 concurrent scrapers x 10: p50 "
          f"{statistics.median(samples) * 1000:.1f} ms, p99 {p99:.1f} ms (target <= 100 ms)")
    server.stop()
    under_a_flood(observed, desired, rows)


def slow_connections(port: int, n: int) -> list[socket.socket]:
    """`n` clients that connect and trickle a request head they never finish."""
    out = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-")
            out.append(s)
        except OSError:
            break  # the server (or this process) is out of descriptors: that is the figure
    return out


def under_a_flood(observed: ObservedState, desired: DesiredState, rows: tuple[VmRow, ...]
                  ) -> None:
    """/metrics and /api/vms p99, 50 concurrent clients, without and with 1,000 idle slow
    connections held open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))  # systemd's default

    def source() -> Reading:
        raise RuntimeError("the benchmark serves held state only")

    store = DesiredStore(None, desired)
    ctl = Controller(source=source, actuator=None, desired=store)  # type: ignore[arg-type]
    ctl.view = Published(last=PassResult((), ()), observed=observed, rows=rows)
    server = StatusServer("127.0.0.1", 0, lambda: StatusDoc(vms=rows), lambda: (True, "ready"),
                          None, WebView(ctl))
    server.start()
    base = f"http://127.0.0.1:{server.port}"

    def get(path: str) -> float:
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(base + path, timeout=30) as r:
                r.read()
        except OSError:
            return float("inf")  # refused or timed out: counted as a miss
        return time.perf_counter() - t

    from concurrent.futures import ThreadPoolExecutor

    for flood in (0, 1000):
        held = slow_connections(server.port, flood)
        for path in ("/metrics", "/api/vms"):
            with ThreadPoolExecutor(max_workers=50) as pool:
                samples = sorted(pool.map(get, [path] * 500))
            misses = sum(x == float("inf") for x in samples)
            p99 = samples[int(len(samples) * 0.99) - 1] * 1000
            print(f"{path:<9} 50 concurrent, {len(held)} slow connections open: p50 "
                  f"{statistics.median(samples) * 1000:.1f} ms, p99 {p99:.1f} ms, "
                  f"{misses} of 500 failed")
        for s in held:
            s.close()
    server.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
