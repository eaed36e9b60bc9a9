"""The attacks of the issue "Safe by default" on the HTTP port, measured (the tests,
tests/integration/test_port_attacks.py, assert; this prints figures):

- 8 loopback addresses x 64 TLS connections that send `GET /healthz` without credentials and
  never read, 4 rounds 2 s apart: authenticated /metrics and /healthz latency (median, p99)
  and how many probes failed;
- 40 concurrent wrong passwords (bcrypt cost 12) from one address: a cached viewer's
  /api/session latency, and another address's first login during a second burst.

    python bench/attacks.py
"""

from __future__ import annotations

import contextlib
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.attacks import Holders, basic, during, get, median, p99  # noqa: E402
from tests.integration.test_http_hardening import (  # noqa: E402
    PASSWORD,
    certificate,
    serve,
    web_yml,
)

served = contextlib.contextmanager(serve)


def port_hold(d: Path) -> None:
    with served(web_yml(d, 4), d / "cert.pem") as site:
        holders = Holders(site.port, site.ca)

        def attack(h: Holders = holders) -> None:
            for _ in range(4):
                h.round()
                time.sleep(2)

        auth = basic("ops", PASSWORD)
        port, ca = site.port, site.ca
        scrape = during(attack, lambda: get(port, ca, "/metrics", auth), 10)
        health = during(attack, lambda: get(port, ca, "/healthz"), 10)
        holders.close()
        for name, s in (("authenticated /metrics", scrape), ("/healthz", health)):
            bad = sum(1 for _, c in s if c != 200)
            print(f"port hold: {name:24} median {median(s) * 1000:7.1f} ms  p99 "
                  f"{p99(s) * 1000:7.1f} ms  failed {bad}/{len(s)}")
        print(f"port hold: attack connections opened {holders.opened}, refused "
              f"{holders.refused}")


def burst(d: Path) -> None:
    with served(web_yml(d, 12), d / "cert.pem") as site:
        port, ca = site.port, site.ca
        viewer = basic("grafana", PASSWORD)
        get(port, ca, "/api/session", viewer)
        results: list[int] = []
        wrong = basic("ops", "wrong")

        def spray(source: str, n: int) -> None:
            ts = [threading.Thread(target=lambda: results.append(
                get(port, ca, "/api/session", wrong, source=source, timeout=60)))
                for _ in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        cached = during(lambda: spray("127.0.0.9", 40), lambda: get(
            port, ca, "/api/session", viewer), 3)
        print(f"password burst: 40 wrong -> {results.count(401)} hashed (401), "
              f"{results.count(429)} refused before hashing (429)")
        print(f"password burst: cached viewer median {median(cached) * 1000:.1f} ms, p99 "
              f"{p99(cached) * 1000:.1f} ms")
        second = threading.Thread(target=spray, args=("127.0.0.8", 20))
        second.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        get(port, ca, "/api/session", basic("ops", PASSWORD), source="127.0.0.5")
        print(f"password burst: another address's first login during a burst "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        second.join()


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        certificate(d)
        port_hold(d)
        burst(d)


if __name__ == "__main__":
    main()
