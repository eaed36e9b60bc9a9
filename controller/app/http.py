"""One HTTP port, on aiohttp: /metrics, /healthz, /readyz, /status, the web view and its API,
server-sent events and the console WebSocket. Served from held state only.

Why aiohttp: one well-kept library gives the server, WebSockets, streaming responses and TLS on
one asyncio loop -- no thread and no blocking read per connection, so a client that trickles
bytes costs a descriptor and a few kilobytes, not a thread (the stdlib server it replaces was
taken down by 1,015 slow connections). What aiohttp does not bound, this module does, below
the application (`ConnectionGuard`): connections in total and per client address (the oldest
that has not yet sent a whole request is closed first, so a flood cannot lock out a client
that talks), one deadline for the TLS handshake, the request head and its body, and no
keep-alive (each connection carries one request; event streams and consoles are long by
themselves and bounded on their own).

Every route is in one table (app/routes.py) with the role it needs; `policy` (app/policy.py)
checks Host, Origin, CSRF, the login and the role once, before any handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.app.limits import Limits
from controller.app.policy import Policy, policy_middleware, security_headers
from controller.app.routes import Handlers, routes
from controller.app.webconfig import WebAuth
from controller.engine.guard import FRESHNESS_SECONDS
from controller.logs import logger
from controller.model.overview import StatusDoc

if TYPE_CHECKING:
    from controller.app.web import WebView


def raise_descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (systemd's default soft limit is 1,024;
    its hard limit 524,288); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass
class _Conn:
    peer: str
    opened: float
    transport: asyncio.BaseTransport | None = None
    claimed: bool = False  # a whole request arrived: no longer subject to the deadline
    timer: asyncio.TimerHandle | None = None


@dataclass
class ConnectionGuard:
    """Counts and bounds the port's connections below aiohttp (see the module's docstring)."""

    limits: Limits
    max_connections: int
    _conns: dict[int, _Conn] = field(default_factory=dict)  # id(protocol wrapper) -> state
    _by_transport: dict[int, _Conn] = field(default_factory=dict)
    refused: int = 0  # newcomers turned away: every slot busy with a request
    evicted: int = 0  # connections closed to make room (had not sent a whole request)
    expired: int = 0  # connections closed at the deadline

    def admit(self, conn: _Conn, loop: asyncio.AbstractEventLoop) -> bool:
        """Count a new connection; False: no slot (every one is busy with a request)."""
        peers = [c for c in self._conns.values() if c.peer == conn.peer]
        if len(peers) >= self.limits.per_client and not self._evict(peers):
            self.refused += 1
            return False
        if len(self._conns) >= self.max_connections and not self._evict(
                list(self._conns.values())):
            self.refused += 1
            return False
        self._conns[id(conn)] = conn
        conn.timer = loop.call_later(self.limits.request_seconds, self._expire, conn)
        if conn.transport is not None:
            self._by_transport[id(conn.transport)] = conn
        return True

    def _evict(self, among: list[_Conn]) -> bool:
        """Close the oldest connection that has not sent a whole request yet (a talking client
        gets a slot; a trickling one loses it). False if every one has (streams, consoles):
        then the newcomer is the one refused."""
        waiting = sorted((c for c in among if not c.claimed), key=lambda c: c.opened)
        if not waiting:
            return False
        victim = waiting[0]
        self.evicted += 1
        self.release(victim)
        if victim.transport is not None:
            _abort(victim.transport)
        return True

    def _expire(self, conn: _Conn) -> None:
        if not conn.claimed and conn.transport is not None:
            self.expired += 1
            _abort(conn.transport)

    def claim(self, transport: asyncio.BaseTransport | None) -> None:
        """A whole request arrived on this connection (the policy step calls this)."""
        conn = self._by_transport.get(id(transport)) if transport is not None else None
        if conn is not None:
            conn.claimed = True
            if conn.timer is not None:
                conn.timer.cancel()

    def retarget(self, conn: _Conn, transport: asyncio.BaseTransport) -> None:
        """TLS is up: requests now arrive on the TLS transport."""
        if conn.transport is not None:
            self._by_transport.pop(id(conn.transport), None)
        conn.transport = transport
        self._by_transport[id(transport)] = conn

    def release(self, conn: _Conn) -> None:
        self._conns.pop(id(conn), None)
        if conn.transport is not None:
            self._by_transport.pop(id(conn.transport), None)
        if conn.timer is not None:
            conn.timer.cancel()

    @property
    def open(self) -> int:
        return len(self._conns)


def _abort(transport: asyncio.BaseTransport) -> None:
    with contextlib.suppress(Exception):
        transport.abort()  # type: ignore[attr-defined]


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: the guard counts it from the moment it
    is accepted -- before TLS, whose handshake this wrapper starts itself (`start_tls`), so a
    client that never finishes one holds a counted slot under the same deadline."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard,
                 loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None):
        self.inner, self.guard, self.loop, self.tls = inner, guard, loop, tls
        self.conn: _Conn | None = None
        self._ready = False  # inner has its transport
        self._early: list[bytes] = []  # application data the TLS layer delivered before that

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.conn = _Conn(peer=str(peer[0]) if peer else "?", opened=time.monotonic(),
                          transport=transport)
        if not self.guard.admit(self.conn, self.loop):
            _abort(transport)
            return
        if self.tls is None:
            self._connect(transport)
        else:
            self.loop.create_task(self._handshake(transport))

    async def _handshake(self, transport: asyncio.BaseTransport) -> None:
        assert self.conn is not None and self.tls is not None
        try:
            wrapped = await self.loop.start_tls(
                transport, self, self.tls, server_side=True,  # type: ignore[arg-type]
                ssl_handshake_timeout=self.guard.limits.request_seconds,
                # asyncio waits 30 s for a peer's close_notify by default: a client that
                # never reads would hold its slot that long after its answer.
                ssl_shutdown_timeout=self.guard.limits.request_seconds)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            wrapped = None
        if wrapped is None:
            _abort(transport)
            self.guard.release(self.conn)
            return
        self.guard.retarget(self.conn, wrapped)
        self._connect(wrapped)

    def _connect(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        self._ready = True
        for data in self._early:
            self.inner.data_received(data)
        self._early.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.guard.release(self.conn)
        if self._ready:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ready:
            self.inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._ready else None

    def pause_writing(self) -> None:
        if self._ready:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._ready:
            self.inner.resume_writing()


class StatusServer:
    """The port, on its own thread and event loop. The socket is bound in the constructor (a
    port in use fails at start-up, not later)."""

    def __init__(self, host: str, port: int, status: Callable[[], StatusDoc],
                 ready: Callable[[], tuple[bool, str]], web_auth: WebAuth | None = None,
                 view: WebView | None = None, limits: Limits | None = None):
        self.limits = limits = limits or Limits()
        soft = raise_descriptor_limit()
        cap = max(16, min(limits.max_connections, soft - limits.reserve_descriptors))
        self.guard = ConnectionGuard(limits, cap)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
            self._sock.listen(256)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.host = host
        self.tls: ssl.SSLContext | None = web_auth.tls if web_auth is not None else None
        self.policy = Policy(web_auth, host, self.port, self.guard,
                             tls=self.tls is not None)
        self.handlers = Handlers(status, ready, view, self.policy, limits)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self.thread = threading.Thread(target=self._run, name="http", daemon=True)
        self.log = logger(component="http")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[policy_middleware(self.policy)],
                              client_max_size=self.limits.max_body,
                              handler_args={"max_field_size": 8190, "max_line_size": 8190})
        for r in routes(self.handlers):
            app.router.add_route(r.method, r.path, r.handler)
            self.policy.register(r)
        app.on_response_prepare.append(security_headers(self.policy))
        return app

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                                     keepalive_timeout=0)
        await self._runner.setup()
        inner = self._runner.server
        assert inner is not None
        loop = asyncio.get_running_loop()
        self.handlers.attach(loop)
        self._server = await loop.create_server(
            lambda: _Guarded(inner(), self.guard, loop, self.tls), sock=self._sock,
            backlog=256)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._loop_error)
        self._loop.run_until_complete(self._serve())
        self._started.set()
        self._loop.run_forever()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A client that vanished mid-handshake or mid-write is not our error; anything else is
        # logged, never fatal: the port stays up.
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        self.log.warning("http_loop_error", message=context.get("message"), error=repr(exc))

    def start(self) -> None:
        self.thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the HTTP port did not start")

    def stop(self) -> None:
        if not self.thread.is_alive():
            self._sock.close()
            self._loop.close()
            self.policy.executor.shutdown(wait=False)
            return

        async def shutdown() -> None:
            self.handlers.stopping.set()
            if self._server is not None:
                self._server.close()
            if self._runner is not None:
                await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self._loop.close()
        self.policy.executor.shutdown(wait=False, cancel_futures=True)
        self._sock.close()


def readiness(last_pass_at: float | None, desired_valid: bool) -> tuple[bool, str]:
    if not desired_valid:
        return False, "desired state invalid or missing"
    if last_pass_at is None:
        return False, "no reconcile pass yet"
    age = time.time() - last_pass_at
    if age > FRESHNESS_SECONDS:
        return False, f"last pass {age:.0f} s ago"
    return True, "ready"
