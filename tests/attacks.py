"""The attacks of the issue "Safe by default", as code the tests and bench/attacks.py share.

Every one is bounded in count and time, sends only to loopback (127.0.0.0/8: the source
addresses 127.0.0.2.. stand for other clients), and stops by itself.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(port: int, ca: Path, path: str, authorization: str | None = None,
        source: str = "127.0.0.1", timeout: float = 5.0) -> int:
    """One GET over TLS from `source`; its status (599 when refused or timed out)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout,
                                       source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": authorization}
                     if authorization else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 599
    finally:
        conn.close()


@dataclass
class Holders:
    """Connections that send a whole request without credentials, then never read: the
    answer and the TLS shutdown wait on them."""

    port: int
    ca: Path
    addresses: int = 8
    per_address: int = 64
    socks: list[socket.socket] = field(default_factory=list)
    opened: int = 0
    refused: int = 0

    def round(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        for a in range(self.addresses):
            for _ in range(self.per_address):
                try:
                    raw = socket.create_connection(("127.0.0.1", self.port), timeout=3,
                                                   source_address=(f"127.0.0.{2 + a}", 0))
                    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                except OSError:
                    self.refused += 1
                    continue
                self.opened += 1
                self.socks.append(s)

    def close(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks.clear()


def during(attack: Callable[[], None], probe: Callable[[], int], seconds: float,
           every: float = 0.1) -> list[tuple[float, int]]:
    """Run `attack` on its own thread (it ends by itself) while `probe` is timed every
    `every` seconds for `seconds`: [(latency, status)]."""
    t = threading.Thread(target=attack, name="attack", daemon=True)
    t.start()
    out: list[tuple[float, int]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        code = probe()
        out.append((time.perf_counter() - t0, code))
        time.sleep(every)
    t.join(timeout=60)
    return out


def p99(samples: list[tuple[float, int]]) -> float:
    lat = sorted(s[0] for s in samples)
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0


def median(samples: list[tuple[float, int]]) -> float:
    return statistics.median(s[0] for s in samples) if samples else 0.0
