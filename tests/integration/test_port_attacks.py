"""The HTTP port under the attacks of the issue "Safe by default" (1 and 2), over real TLS on
loopback: nobody unauthenticated can hold its connection slots, and a burst of wrong
passwords from one address delays no one else. Figures before and after: bench/attacks.py."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks import Holders, basic, during, get, p99
from tests.integration.test_http_hardening import PASSWORD, Site, certificate, serve, web_yml
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    certificate(d)
    return d


@pytest.fixture
def site(tls: Path) -> Iterator[Site]:
    yield from serve(web_yml(tls, 4), tls / "cert.pem")


@pytest.fixture
def costly(tls: Path) -> Iterator[Site]:
    """Passwords hashed at bcrypt cost 12, as htpasswd -nBC 12 makes them."""
    yield from serve(web_yml(tls, 12), tls / "cert.pem")


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("many_descriptors")
def test_unauthenticated_clients_that_never_read_cannot_hold_the_port(site: Site) -> None:
    """64 TLS connections from each of 8 addresses send `GET /healthz` without credentials and
    never read, again every 2 s: a logged-in scrape and /healthz from another address keep
    answering within 1 s."""
    holders = Holders(site.port, site.ca)

    def attack() -> None:
        for _ in range(4):  # 4 rounds of 512: past every slot the port has, each time
            holders.round()
            time.sleep(2)

    try:
        auth = basic("ops", PASSWORD)
        scrape = during(attack, lambda: get(site.port, site.ca, "/metrics", auth), 10)
        health = during(attack, lambda: get(site.port, site.ca, "/healthz"), 10)
    finally:
        holders.close()
    failed = [c for _, c in scrape + health if c != 200]
    print(f"attack: {holders.opened} opened, {holders.refused} refused; authenticated "
          f"p99 {p99(scrape):.3f} s, /healthz p99 {p99(health):.3f} s, {len(failed)} of "
          f"{len(scrape + health)} probes failed")
    assert not failed, failed
    assert holders.opened > site.server.guard.max_connections  # the port was full
    assert p99(scrape) < 1.0 and p99(health) < 1.0


def _server_side(port: int, client_port: int) -> list[str]:
    """The server's end of one connection while a process holds it (`ss -p` names the
    holder; once the server closed it, the kernel's FIN-WAIT-2 socket has none)."""
    out = subprocess.run(["ss", "-Htanp", "state", "all", f"( sport = :{port} and dport = "
                          f":{client_port} )"], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    return [line for line in out.splitlines() if "users:(" in line]


def test_a_held_answer_is_closed_within_the_deadline_tls_shutdown_included(site: Site) -> None:
    """A client that sends a whole request and never reads: once answered, the server waits
    for its TLS close_notify -- at most the documented deadline (asyncio's default was 30 s)."""
    holders = Holders(site.port, site.ca, addresses=1, per_address=1)
    holders.round()
    (s,) = holders.socks
    try:
        client_port = s.getsockname()[1]
        assert _server_side(site.port, client_port)
        wait_for("the server's end closed", lambda: not _server_side(site.port, client_port),
                 site.server.limits.request_seconds + 3, 0.2)
    finally:
        holders.close()


def _burst(site: Site, n: int, results: list[int], source: str = "127.0.0.9") -> None:
    """`n` wrong passwords at once from `source`."""
    wrong = basic("ops", "not the password")
    threads = [threading.Thread(target=lambda: results.append(
        get(site.port, site.ca, "/api/session", wrong, source=source, timeout=60)))
        for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_a_password_burst_from_one_address_delays_no_one_else(costly: Site) -> None:
    """40 concurrent wrong passwords (bcrypt cost 12) from one address: the failure budget is
    reserved before hashing (20 hashed, the rest 429), a cached login never waits for a hash,
    and another address's first login waits for at most one hash of the burst."""
    site = costly
    viewer = basic("grafana", PASSWORD)
    assert get(site.port, site.ca, "/api/session", viewer) == 200  # cached from now on
    results: list[int] = []
    cached = during(lambda: _burst(site, 40, results),
                    lambda: get(site.port, site.ca, "/api/session", viewer), 3)
    assert sorted(set(results)) == [401, 429] and results.count(401) == 20, results
    assert p99(cached) < 0.5 and all(code == 200 for _, code in cached), cached
    # A second burst in flight (another address: the first one's budget is spent) while
    # a third address logs in for the first time (an uncached login: one bcrypt).
    results.clear()
    burst = threading.Thread(target=_burst, args=(site, 20, results, "127.0.0.8"))
    burst.start()
    time.sleep(0.3)  # its hashes are queued by now
    t = time.perf_counter()
    assert get(site.port, site.ca, "/api/session", basic("ops", PASSWORD),
               source="127.0.0.5") == 200
    first_login = time.perf_counter() - t
    burst.join(timeout=120)
    print(f"burst: cached viewer p99 {p99(cached):.3f} s; another address's first "
          f"login {first_login:.3f} s")
    assert first_login < 2.0
