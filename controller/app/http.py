"""One HTTP port: /metrics, /healthz, /readyz, /status (JSON), and the web view (/, /vm/NAME,
/api/..., /api/events as server-sent events). Served from held state only.

One port, not a second listener: the same web configuration (TLS + users) guards everything,
operators open one address in their firewall, and Prometheus and browsers share it."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST

from controller import metrics
from controller.app.status_html import render_status_html
from controller.app.webconfig import WebAuth
from controller.engine.guard import FRESHNESS_SECONDS

if TYPE_CHECKING:
    from controller.app.web import WebView
from controller.model.overview import StatusDoc

OPEN_PATHS = ("/healthz", "/readyz")  # liveness for Pacemaker/Docker: no cluster data in them
WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC = {"app.js": "text/javascript", "vm.js": "text/javascript", "style.css": "text/css",
          "common.js": "text/javascript", "console.js": "text/javascript"}
VM_PATH = re.compile(r"^/vm/([A-Za-z0-9_.-]{1,64})$")
CONSOLE_WS = re.compile(r"^/console/([A-Za-z0-9_.-]{1,64})/ws$")
CONSOLE_TICKET = re.compile(r"^/api/vms/([A-Za-z0-9_.-]{1,64})/console$")
NOVNC_DIR = Path("/usr/share/novnc")  # Debian's novnc package
NOVNC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
               ".png": "image/png", ".html": "text/html; charset=utf-8"}
API_VM_PATH = re.compile(r"^/api/vms/([A-Za-z0-9_.-]{1,64})$")
MAX_EVENT_STREAMS = 64  # each open page holds one thread
KEEPALIVE_SECONDS = 15.0


class StatusServer:
    def __init__(self, host: str, port: int, status: Callable[[], StatusDoc],
                 ready: Callable[[], tuple[bool, str]], web: WebAuth | None = None,
                 view: WebView | None = None):
        self._status = status
        self._ready = ready
        self._streams = threading.BoundedSemaphore(MAX_EVENT_STREAMS)
        self._stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0  # seconds a client may take to send its request
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                user = web.user(self.headers.get("Authorization")) if web is not None else None
                if web is not None and web.users and user is None:
                    self._unauthorized()
                    return
                m = CONSOLE_TICKET.match(path)
                if m is None or view is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                broker = view.broker
                if broker is None or not view.console:
                    self._send(403, b'{"error": "console unavailable: the controller needs '
                               b'--web-config (TLS and users) and named agents to relay to"}\n',
                               "application/json")
                    return
                try:
                    token, node = broker.ticket(m.group(1), user or "anonymous")
                except LookupError as exc:
                    self._send(409, json.dumps({"error": str(exc)}).encode(), "application/json")
                    return
                self._send(200, json.dumps({"ticket": token, "node": node}).encode(),
                           "application/json")

            def _unauthorized(self) -> None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="kvm-warden"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "13")
                self.end_headers()
                self.wfile.write(b"unauthorized\n")

            def _console(self, vm: str, view: WebView) -> None:
                """The WebSocket of a console session: the ticket is its authentication."""
                query = urllib.parse.parse_qs(self.path.partition("?")[2])
                broker = view.broker
                ticket = broker.redeem(query.get("ticket", [""])[0], vm) \
                    if broker is not None and view.console else None
                if broker is None or ticket is None:
                    self._send(403, b"console: no valid ticket\n", "text/plain")
                    return
                lines = [self.requestline, *(f"{k}: {v}" for k, v in self.headers.items())]
                request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                self.close_connection = True
                broker.serve(self.connection, request, ticket)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                ws = CONSOLE_WS.match(path)
                if ws is not None and view is not None:
                    self._console(ws.group(1), view)
                    return
                if web is not None and path not in OPEN_PATHS and not web.allowed(
                        self.headers.get("Authorization")):
                    self._unauthorized()
                    return
                if view is not None and self._web(path, view):
                    return
                if path == "/metrics":
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    dead = metrics.dead_threads()
                    if dead:
                        self._send(503, f"dead threads: {', '.join(dead)}\n".encode(),
                                   "text/plain")
                    else:
                        self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ok, why = outer._ready()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
                elif path == "/status" and not self._wants_html():
                    body = msgspec.json.format(msgspec.json.encode(outer._status()), indent=1)
                    self._send(200, body, "application/json")
                elif path in ("/status", "/status.html", "/"):
                    page = render_status_html(outer._status()).encode()
                    self._send(200, page, "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _web(self, path: str, view: WebView) -> bool:
                """The web view's routes; False: not one of them."""
                query = urllib.parse.parse_qs(self.path.partition("?")[2])
                if path == "/":
                    self._file("index.html", "text/html; charset=utf-8")
                elif VM_PATH.match(path):
                    self._file("vm.html", "text/html; charset=utf-8")
                elif path.startswith("/static/") and path[8:] in STATIC:
                    self._file(path[8:], STATIC[path[8:]])
                elif path.startswith("/novnc/"):
                    self._novnc(path[len("/novnc/"):])
                elif path == "/api/vms":
                    self._send(200, view.vms_json(), "application/json")
                elif (m := API_VM_PATH.match(path)) is not None:
                    detail = view.vm_detail(m.group(1))
                    if detail is None:
                        self._send(404, b'{"error": "no such VM"}\n', "application/json")
                    else:
                        self._send(200, json.dumps(detail).encode(), "application/json")
                elif path == "/api/history":
                    try:
                        since = float(query["since"][0]) if "since" in query else None
                        limit = int(query.get("limit", ["1000"])[0])
                    except ValueError:
                        self._send(400, b'{"error": "since: epoch seconds; limit: an integer"}\n',
                                   "application/json")
                        return True
                    self._send(200, view.history_json(query.get("vm", [None])[0], since, limit),
                               "application/json")
                elif path == "/api/events":
                    self._events(view)
                else:
                    return False
                return True

            def _novnc(self, rel: str) -> None:
                """noVNC's files from Debian's package: only below its directory, known types."""
                try:
                    target = (NOVNC_DIR / rel).resolve()
                except (OSError, ValueError):
                    target = NOVNC_DIR
                ctype = NOVNC_TYPES.get(target.suffix)
                if ctype is None or not target.is_relative_to(NOVNC_DIR) or not target.is_file():
                    self._send(404, b"not found\n", "text/plain")
                    return
                self._send(200, target.read_bytes(), ctype)

            def _file(self, name: str, ctype: str) -> None:
                self._send(200, (WEB_DIR / name).read_bytes(), ctype)

            def _events(self, view: WebView) -> None:
                """Server-sent events: `update` with the pass version whenever a pass ends."""
                if not outer._streams.acquire(blocking=False):
                    self._send(503, b"too many open event streams\n", "text/plain")
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    seen = -1
                    while not outer._stopping.is_set():
                        version = view.wait(seen, KEEPALIVE_SECONDS) if seen >= 0 else view.version
                        if version != seen:
                            self.wfile.write(f"event: update\ndata: {version}\n\n".encode())
                            seen = version
                        else:
                            self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
                except OSError:
                    pass  # the page went away
                finally:
                    outer._streams.release()

            def _wants_html(self) -> bool:
                accept = self.headers.get("Accept", "")
                return "text/html" in accept and "application/json" not in accept

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not audit events

        class Server(ThreadingHTTPServer):
            # A queue for bursts of scrapers; stalled clients time out (Handler.timeout) instead
            # of holding a thread and a descriptor forever.
            request_queue_size = 256
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away (BrokenPipe, reset) is not an error of ours

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = super().get_request()
                if web is not None and web.tls is not None:
                    # The handshake happens on the handler's thread (first read, under the
                    # handler's timeout): a client that never finishes it cannot stall accept.
                    sock = web.tls.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False)
                return sock, addr

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


def readiness(last_pass_at: float | None, desired_valid: bool) -> tuple[bool, str]:
    if not desired_valid:
        return False, "desired state invalid or missing"
    if last_pass_at is None:
        return False, "no reconcile pass yet"
    age = time.time() - last_pass_at
    if age > FRESHNESS_SECONDS:
        return False, f"last pass {age:.0f} s ago"
    return True, "ready"
