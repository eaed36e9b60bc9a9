"""The HTTP port probed as an attacker would, over real TLS on loopback: a slow-loris flood,
a rebinding Host, cross-site POSTs and WebSockets, roles, guessable user names, oversized
passwords, password spraying; and the service refusing to serve off loopback in clear text."""

from __future__ import annotations

import base64
import http.client
import json
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from controller.app.http import StatusServer
from controller.app.web import WebView
from controller.app.webconfig import load_web_config
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller
from controller.engine.observe import Reading
from controller.model.desired import parse_desired
from controller.model.overview import StatusDoc
from tests.cibs import ROOT

PASSWORD = "correct horse"


@dataclass
class Site:
    server: StatusServer
    ca: Path

    @property
    def port(self) -> int:
        return self.server.port

    def request(self, method: str, path: str, user: str | None = None,
                password: str = PASSWORD, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
        h = dict(headers or {})
        if user is not None:
            h["Authorization"] = "Basic " + base64.b64encode(
                f"{user}:{password}".encode()).decode()
        try:
            conn.request(method, path, headers=h)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def certificate(d: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)


def web_yml(d: Path, cost: int) -> Path:
    ops = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
    viewer = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path = d / f"web-{cost}.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {d / 'cert.pem'}\n  key_file: {d / 'key.pem'}\n"
        f"basic_auth_users:\n  ops: '{ops}'\n  grafana: '{viewer}'\n"
        "kvm_warden:\n  roles: {ops: operator}\n")
    return path


def controller() -> Controller:
    def source() -> Reading:
        raise RuntimeError("these tests serve held state only")

    store = DesiredStore(None, parse_desired("version: 1\n"))
    return Controller(source=source, actuator=None, desired=store)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    certificate(d)
    return d


def serve(config: Path, ca: Path) -> Iterator[Site]:
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"),
                          load_web_config(config), WebView(controller()))
    server.start()
    try:
        yield Site(server, ca)
    finally:
        server.stop()


@pytest.fixture()
def site(tls_dir: Path) -> Iterator[Site]:
    yield from serve(web_yml(tls_dir, 4), tls_dir / "cert.pem")


def test_a_rebinding_host_is_refused(site: Site) -> None:
    assert site.request("GET", "/metrics", "ops")[0] == 200
    assert site.request("GET", "/metrics", "ops", headers={"Host": "localhost:1"})[0] == 200
    code, _, body = site.request("GET", "/api/vms", "ops", headers={"Host": "evil.example"})
    assert code == 421 and b"evil.example" in body


def test_state_changes_need_the_same_origin_and_the_users_csrf_token(site: Site) -> None:
    path = "/api/vms/web01/console"
    own = f"https://127.0.0.1:{site.port}"
    code, _, body = site.request("POST", path, "ops", headers={"Origin": "https://evil.example"})
    assert (code, b"cross-origin" in body) == (403, True)
    code, _, body = site.request("POST", path, "ops", headers={"Origin": own})
    assert (code, b"X-CSRF-Token" in body) == (403, True)  # a cross-site form has no token
    session = json.loads(site.request("GET", "/api/session", "ops")[2])
    assert session["role"] == "operator"
    viewer_token = json.loads(site.request("GET", "/api/session", "grafana")[2])["csrf"]
    assert viewer_token != session["csrf"]  # bound to the user
    code, _, body = site.request("POST", path, "ops", headers={
        "Origin": own, "X-CSRF-Token": viewer_token})
    assert code == 403 and b"X-CSRF-Token" in body
    code, _, body = site.request("POST", path, "ops", headers={
        "Origin": own, "X-CSRF-Token": session["csrf"]})
    # Past every check: the handler answers (no agents here to relay a console to).
    assert code == 403 and b"console unavailable" in body


def test_a_foreign_origin_websocket_is_refused(site: Site) -> None:
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}
    code, _, body = site.request("GET", "/console/web01/ws?ticket=x", headers={
        **ws, "Origin": "https://evil.example"})
    assert code == 403 and b"cross-origin" in body
    code, _, body = site.request("GET", "/console/web01/ws?ticket=x", headers={
        **ws, "Origin": f"https://127.0.0.1:{site.port}"})
    assert code == 403 and b"no valid ticket" in body


def test_roles_per_route(site: Site) -> None:
    token = json.loads(site.request("GET", "/api/session", "grafana")[2])["csrf"]
    for path in ("/metrics", "/status", "/api/vms", "/api/history", "/"):
        assert site.request("GET", path, "grafana")[0] == 200, path
    code, _, body = site.request("POST", "/api/vms/web01/console", "grafana",
                                 headers={"X-CSRF-Token": token})
    assert code == 403 and b"grafana is a viewer; this needs the operator role" in body
    assert site.request("GET", "/healthz")[0] == 200  # liveness: no login
    assert site.request("GET", "/readyz")[0] == 200
    assert site.request("GET", "/nosuch")[0] == 401  # no route discovery without a login
    assert site.request("GET", "/nosuch", "grafana")[0] == 404


def test_every_response_has_the_security_headers_and_no_banner(site: Site) -> None:
    for path, user in (("/healthz", None), ("/api/vms", "ops"), ("/metrics", None)):
        _, headers, _ = site.request("GET", path, user)
        assert "server" not in headers, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["strict-transport-security"].startswith("max-age=")


def test_passwords_longer_than_bcrypt_reads_get_a_clear_401(site: Site) -> None:
    for n in (73, 1024):
        code, headers, body = site.request("GET", "/metrics", "ops", "x" * n)
        assert code == 401 and b"longer than bcrypt's 72 bytes" in body, n
        assert "www-authenticate" in headers


def test_password_spraying_from_one_address_gets_429(site: Site) -> None:
    for _ in range(20):
        assert site.request("GET", "/metrics", "ops", "wrong")[0] == 401
    code, headers, _ = site.request("GET", "/metrics", "ops", "wrong")
    assert code == 429 and int(headers["retry-after"]) > 0
    # Requests without credentials (a browser's first try) never counted and cost nothing.
    assert site.request("GET", "/metrics")[0] == 429


def timed_login(site: Site, user: str) -> float:
    t = time.perf_counter()
    assert site.request("GET", "/metrics", user, "wrong")[0] == 401
    return time.perf_counter() - t


def test_a_wrong_user_costs_what_a_wrong_password_costs(tls_dir: Path) -> None:
    """The stand-in hash has the configured cost (12 here): names are not guessable by time."""
    for site in serve(web_yml(tls_dir, 12), tls_dir / "cert.pem"):
        samples: dict[str, list[float]] = {"nobody": [], "ops": []}
        for _ in range(8):  # interleaved: a load that changes over time weighs on both alike
            for u in samples:
                samples[u].append(timed_login(site, u))
        # The least of each: its own cost, free of the load of whatever else this machine runs.
        unknown, known = (min(samples[u]) for u in ("nobody", "ops"))
        assert abs(unknown - known) / known < 0.10, samples


def test_a_slow_loris_flood_leaves_the_port_answering(site: Site) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    attackers: list[socket.socket] = []
    try:
        # 1,000 connections that never finish a request: half never start TLS, half trickle
        # a request head one byte at a time (in clear: the TLS layer waits for a handshake).
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", site.port), timeout=5)
            if i % 2:
                s.send(b"\x16")  # the first byte of a TLS ClientHello, and no more
            attackers.append(s)
        slowest = 0.0
        for _ in range(10):
            for path, user in (("/healthz", None), ("/metrics", "ops")):
                t = time.perf_counter()
                code = site.request("GET", path, user, timeout=5)[0]
                slowest = max(slowest, time.perf_counter() - t)
                assert code == 200, path
        assert slowest < 1.0, slowest
        guard = site.server.guard
        assert guard.open <= guard.limits.per_client  # the flood holds a bounded share
        assert guard.evicted > 0
    finally:
        for s in attackers:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_stalled_request_is_closed_at_its_deadline(tls_dir: Path) -> None:
    for site in serve(web_yml(tls_dir, 4), tls_dir / "cert.pem"):
        ctx = ssl.create_default_context(cafile=str(site.ca))
        raw = socket.create_connection(("127.0.0.1", site.port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
            t = time.monotonic()
            try:
                assert s.recv(1) == b""  # closed by the server
            except ConnectionResetError:
                pass  # closed by the server, abruptly
            assert time.monotonic() - t < site.server.limits.request_seconds + 2
        assert site.server.guard.expired >= 1


def test_off_loopback_users_without_tls_are_refused(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    res = subprocess.run([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                          "--http-host", "0.0.0.0", "--http-port", "0", "--web-config", str(cfg),
                          "--passes", "1"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "basic_auth_users and tls_server_config" in res.stderr


def test_a_second_origin_in_a_real_browser_gets_neither_a_ticket_nor_a_websocket(
        site: Site, tmp_path: Path) -> None:
    """Chromium carries the operator's credentials (as a browser that logged in does); a page
    of another origin posts a form to the console endpoint and opens the console WebSocket."""
    import functools
    import http.server
    import threading

    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    from controller.metrics import REGISTRY
    from tests.browser import chromium

    target = f"https://127.0.0.1:{site.port}"
    (tmp_path / "evil.html").write_text(
        "<!doctype html><form id=f method=post "
        f"action='{target}/api/vms/web01/console'></form><script>"
        f"const ws = new WebSocket('wss://127.0.0.1:{site.port}/console/web01/ws?ticket=x');"
        "ws.onclose = () => { document.title = 'ws closed'; document.getElementById('f').submit(); };"
        "</script>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()

    def refused(reason: str) -> float:
        return REGISTRY.get_sample_value("kvm_warden_http_refused_total",
                                         {"reason": reason}) or 0.0

    before = refused("origin")
    drv = chromium(tmp_path / "profile", ("ops", PASSWORD))
    try:
        drv.get(f"http://127.0.0.1:{evil.server_address[1]}/evil.html")
        # The page navigates when its form posts: read the body in one script, and ask again
        # while the document is being replaced.
        wait = WebDriverWait(drv, 30, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,
                                                 JavascriptException))
        wait.until(lambda d: "cross-origin request refused" in (d.execute_script(
            "return document.body ? document.body.innerText : ''") or ""))  # the form's POST
        assert refused("origin") >= before + 2  # the WebSocket upgrade and the POST
    finally:
        drv.quit()
        evil.shutdown()
        evil.server_close()


def test_the_history_is_paged_and_a_page_is_bounded(site: Site) -> None:
    """A viewer asking for 100,000 events used to stall the port: pages are 1,000 at most."""
    code, _, body = site.request("GET", "/api/history?limit=100000", "grafana")
    assert code == 400 and b"1 to 1000" in body
    code, _, body = site.request("GET", "/api/history?limit=10", "grafana")
    assert code == 200 and json.loads(body) == {"events": [], "next_before": None}
