"""The one policy step every request passes before any handler: GET, POST and WebSocket alike.

In order: the Host header (a name this port is reached by: DNS rebinding through an `ssh -L`
tunnel or a proxy is refused); for state-changing requests and WebSocket upgrades, a
same-origin Origin; the login (Basic auth against bcrypt hashes, checked off the event loop at
a constant cost, with a budget of failures per client address); the route's role; and for
POSTs the CSRF token bound to the user. Responses get the security headers and no version
banner.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import web

from controller import metrics
from controller.app.pages import refusal
from controller.app.webconfig import RANK, Login, WebAuth
from controller.logs import logger


class Claims(Protocol):
    """The connection guard's side the policy step needs (app/http.py)."""

    def claim(self, transport: asyncio.BaseTransport | None) -> None: ...

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Need = Literal["open", "ticket", "viewer", "operator", "admin"]
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Wrong passwords per client address and minute (each costs a bcrypt: ~0.3 s of CPU at cost
# 12); then 429 until the minute has passed. A request without credentials (a browser's first
# try, before it asks its user) costs nothing and does not count.
FAILED_LOGINS = 20
FAILED_WINDOW = 60.0
CSRF_HEADER = "X-CSRF-Token"
ANONYMOUS = "anonymous"  # a request without credentials where looking needs none
USER = web.RequestKey("user", str)  # who the policy step let in (typed request storage)
ROLE = web.RequestKey("role", str)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    need: Need  # open: no login (liveness); ticket: the handler checks a console ticket


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """`example.org:9443` -> `example.org`; `[::1]:9443` -> `::1`."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Policy:
    def __init__(self, auth: WebAuth | None, listen_host: str, port: int,
                 guard: Claims, tls: bool):
        self.auth, self.port, self.guard, self.tls = auth, port, guard, tls
        self.loopback = is_loopback(listen_host)
        named = set(auth.config.kvm_warden.host_names) if auth is not None else set()
        # On loopback: loopback's own names and the configured ones. Elsewhere: the configured
        # names if any (and the address it listens on), else whatever the client asked for.
        self.hosts: frozenset[str] | None = (
            frozenset(LOOPBACK_NAMES | named) if self.loopback
            else frozenset(named | {listen_host}) if named else None)
        self.routes: dict[Handler, Route] = {}
        self._failures: dict[str, deque[float]] = {}
        self._hashing: dict[str, asyncio.Lock] = {}
        self._secret = auth.csrf_secret if auth is not None else secrets.token_bytes(32)
        # bcrypt is CPU-bound: two at a time, off the event loop; the failure budget bounds it.
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="http-login")
        self.log = logger(component="http")

    def register(self, route: Route) -> None:
        self.routes[route.handler] = route

    @property
    def users(self) -> bool:
        return self.auth is not None and self.auth.users

    def csrf_token(self, user: str) -> str:
        return hmac.new(self._secret, user.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(user), token)

    # -- the checks, in order --------------------------------------------------------------
    def host_ok(self, request: web.Request) -> bool:
        return self.hosts is None or host_name(request.host) in self.hosts

    def same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site request (browsers always send it there)
        scheme = "https" if self.tls else "http"
        return origin.lower() == f"{scheme}://{request.host.lower()}"

    def over_budget(self, peer: str) -> bool:
        now = time.monotonic()
        fails = self._failures.get(peer)
        while fails and now - fails[0] > FAILED_WINDOW:
            fails.popleft()
        return bool(fails) and len(fails) >= FAILED_LOGINS  # type: ignore[arg-type]

    def reserve(self, peer: str) -> float:
        """Count a failure before the hash that may prove it one: concurrent wrong passwords
        cannot all pass the budget check and all be hashed. Returns the mark to release."""
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        mark = time.monotonic()
        self._failures.setdefault(peer, deque()).append(mark)
        return mark

    def release(self, peer: str, mark: float) -> None:
        """The login succeeded: its reserved failure is taken back."""
        fails = self._failures.get(peer)
        if fails is not None and mark in fails:
            fails.remove(mark)

    def quick_login(self, request: web.Request) -> Login | None:
        """The login when it needs no bcrypt (on the event loop); None: it needs one."""
        if not self.users:
            # Without a web configuration the port is on loopback (run.py refuses otherwise),
            # where every local user reaches it: they may look, never change the cluster.
            # Nothing changes the cluster without a named user (an operator in the file).
            return Login(ANONYMOUS, "viewer")
        assert self.auth is not None
        header = request.headers.get("Authorization")
        if header is None and self.loopback and self.auth.config.kvm_warden.anonymous_viewers:
            return Login(ANONYMOUS, "viewer")
        return self.auth.quick(header)

    async def hashed_login(self, request: web.Request, peer: str) -> Login:
        """A login that needs bcrypt: one at a time per client address (a burst from one
        address queues behind itself and leaves the other worker to everyone else)."""
        assert self.auth is not None
        if len(self._hashing) > 10_000:  # bounded under a spray of addresses
            self._hashing = {k: v for k, v in self._hashing.items() if v.locked()}
        lock = self._hashing.setdefault(peer, asyncio.Lock())
        async with lock:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.auth.login, request.headers.get("Authorization"))


def _peer(request: web.Request) -> str:
    return request.remote or "?"


def policy_middleware(p: Policy) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def policy(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            await request.read()  # bounded (client_max_size), under the connection deadline
        route = p.routes.get(request.match_info.handler)
        need: Need = route.need if route is not None else "viewer"  # unknown paths: login first
        if not p.host_ok(request):
            metrics.HTTP_REFUSED.labels(reason="host").inc()
            return refusal(request, 421, f"this port does not serve the host {request.host[:100]!r}")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if (request.method not in ("GET", "HEAD") or upgrade) and not p.same_origin(request):
            metrics.HTTP_REFUSED.labels(reason="origin").inc()
            return refusal(request, 403, "cross-origin request refused")
        if need in ("open", "ticket"):
            return await handler(request)
        peer = _peer(request)
        who = p.quick_login(request)
        # Past its budget an address gets 429 for all but a login already verified.
        if (who is None or who.user is None) and p.over_budget(peer):
            metrics.HTTP_REFUSED.labels(reason="budget").inc()
            return refusal(request, 429, "too many failed logins from this address; try "
                           "again in a minute", {"Retry-After": str(int(FAILED_WINDOW))})
        if who is None:  # a bcrypt: its failure is reserved before it is hashed
            mark = p.reserve(peer)
            who = await p.hashed_login(request, peer)
            if who.user is not None:
                p.release(peer, mark)
        if who.user is None or who.role is None:
            metrics.HTTP_REFUSED.labels(reason="login").inc()
            return refusal(request, 401, who.problem, {"WWW-Authenticate": 'Basic realm="kvm-warden"'})
        if RANK[who.role] < RANK[need] and who.user == ANONYMOUS and p.users:
            # A loopback viewer without credentials (anonymous_viewers): log in to act.
            metrics.HTTP_REFUSED.labels(reason="login").inc()
            return refusal(request, 401, f"this needs the {need} role: log in",
                           {"WWW-Authenticate": 'Basic realm="kvm-warden"'})
        if RANK[who.role] < RANK[need]:
            metrics.HTTP_REFUSED.labels(reason="role").inc()
            return refusal(request, 403, f"{who.user} is a {who.role}; this needs the {need} role")
        if request.method == "POST" and not p.csrf_ok(who.user, request.headers.get(CSRF_HEADER)):
            metrics.HTTP_REFUSED.labels(reason="csrf").inc()
            return refusal(request, 403, f"missing or wrong {CSRF_HEADER} (GET /api/session gives it)")
        if who.user != ANONYMOUS:
            # A named user's connection leaves the request deadline and is never evicted; until
            # then every connection may be (open routes, refusals, anonymous readers): nobody
            # who has not logged in can hold a slot (issue "Safe by default", 1).
            p.guard.claim(request.transport)
        request[USER], request[ROLE] = who.user, who.role
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return refusal(request, 404, f"nothing is served at {request.path[:200]}")

    return policy


def security_headers(p: Policy) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h.pop("Server", None)  # no version banner
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        ws = "wss" if p.tls else "ws"
        h.setdefault("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                     f"connect-src 'self' {ws}://{request.host}; frame-ancestors 'none'; "
                     "base-uri 'none'; form-action 'self'")
        if p.tls:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.path.startswith(("/api/", "/status")):
            h.setdefault("Cache-Control", "no-store")

    return prepare
