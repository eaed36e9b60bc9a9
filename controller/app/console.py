"""The console in the browser: a WebSocket on the controller's web port relayed to the agent on
the VM's node (bus/console.py, CURVE), which connects to the guest's VNC on that node's loopback.

A page first asks for a ticket (`POST /api/vms/NAME/console`, behind the web configuration's
users); the ticket -- random, single use, valid for 30 s -- then opens the WebSocket
(`/console/NAME/ws?ticket=...`), so the console never depends on how a browser passes basic
credentials to a WebSocket. The VM's node and VNC port are resolved when the socket opens: after a
live migration the page's reconnect lands on the new node. Every session that opens is audited
when it opens (user, VM, node, client) and when it ends (how long, why), and is a history event;
an attempt that never opened (the guest gone, the agent silent) is only logged and kept as the
reason the page shows -- a page retrying for a minute writes no audit records.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio
from aiohttp import WSMsgType, web

from controller.app.webconfig import ConsoleLimits
from controller.bus.console import OPEN_TIMEOUT, open_session
from controller.bus.keys import Curve
from controller.engine.audit import AuditRecord, audit_time
from controller.engine.history import Event
from controller.engine.loop import Controller
from controller.logs import logger

TICKET_SECONDS = 30.0
MAX_TICKETS = 256


@dataclass(frozen=True)
class Ticket:
    vm: str
    user: str
    expires: float


@dataclass
class ConsoleBroker:
    controller: Controller
    agents: dict[str, str]  # node -> the agent's console endpoint
    curve: Curve | None
    limits: ConsoleLimits = field(default_factory=ConsoleLimits)
    _tickets: dict[str, Ticket] = field(default_factory=dict)
    # (user, VM) -> why that user's last attempt or session on that VM ended (bounded)
    _reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: dict[str, int] = field(default_factory=dict)  # user -> open sessions
    _ctx: zmq.asyncio.Context | None = None

    def __post_init__(self) -> None:
        self.log = logger(component="console")

    def where(self, vm: str) -> tuple[str, int] | None:
        """(node, VNC port) of a VM running on exactly one node, as the last pass saw it."""
        row = next((r for r in self.controller.last_rows if r.vm == vm), None)
        if row is None or len(row.nodes) != 1 or not row.vnc_port:
            return None
        return row.nodes[0], row.vnc_port

    def ticket(self, vm: str, user: str) -> tuple[str, str]:
        """A single-use ticket for `vm`'s console, and the node it runs on. Raises LookupError.
        Each user has their own allowance: one user's tickets cannot lock the others out."""
        place = self.where(vm)
        if place is None:
            raise LookupError(f"{vm} is not running on one node with a VNC console")
        if place[0] not in self.agents:
            raise LookupError(f"no agent known on {place[0]}")
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
            if sum(t.user == user for t in self._tickets.values()) >= \
                    self.limits.tickets_per_user:
                raise LookupError(f"too many open console tickets for {user}")
            if len(self._tickets) >= MAX_TICKETS:
                raise LookupError("too many open console tickets")
            self._tickets[token] = Ticket(vm=vm, user=user, expires=now + TICKET_SECONDS)
        return token, place[0]

    def last_reason(self, user: str, vm: str) -> str:
        with self._lock:
            return self._reasons.get((user, vm), "")

    def _ended(self, ticket: Ticket, reason: str) -> None:
        with self._lock:
            self._reasons.pop((ticket.user, ticket.vm), None)
            self._reasons[(ticket.user, ticket.vm)] = reason
            while len(self._reasons) > MAX_TICKETS:
                self._reasons.pop(next(iter(self._reasons)))

    def redeem(self, token: str, vm: str) -> Ticket | None:
        with self._lock:
            t = self._tickets.pop(token, None)
        if t is None or t.vm != vm or t.expires < time.monotonic():
            return None
        return t

    # -- one session: WebSocket <-> agent ------------------------------------------------------
    async def serve(self, request: web.Request, ticket: Ticket) -> web.StreamResponse:
        """One console session on the HTTP port's event loop: the browser's WebSocket relayed
        to the agent on the VM's node, for at most max_session_seconds, closed when idle."""
        place = self.where(ticket.vm)
        if place is None or place[0] not in self.agents:
            self._ended(ticket, f"{ticket.vm} is not running on one node (moved?)")
            return web.Response(status=409, text=f"{ticket.vm} is not running on one node\n")
        node, port = place
        with self._lock:
            if self._open.get(ticket.user, 0) >= self.limits.sessions_per_user:
                refused = (f"{ticket.user} has {self.limits.sessions_per_user} console sessions "
                           "open already")
            else:
                refused = ""
                self._open[ticket.user] = self._open.get(ticket.user, 0) + 1
        if refused:
            self._ended(ticket, refused)
            return web.Response(status=429, text=refused + "\n")
        try:
            return await self._session(request, ticket, node, port)
        finally:
            with self._lock:
                self._open[ticket.user] -= 1
                if not self._open[ticket.user]:
                    del self._open[ticket.user]

    async def _session(self, request: web.Request, ticket: Ticket, node: str, port: int
                       ) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=1 << 20, heartbeat=30)
        await ws.prepare(request)
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context.shadow(zmq.Context.instance())
        key = self.curve.peer_key(node) if self.curve is not None else None
        dealer = open_session(self._ctx, self.agents[node], self.curve, key)
        sid = secrets.token_bytes(8)
        started = time.time()
        client = request.remote or "?"
        reason = "closed"
        opened = False
        try:
            await dealer.send_multipart([b"open", sid, str(port).encode()])
            if not await dealer.poll(int(OPEN_TIMEOUT * 1000)):
                reason = f"the agent on {node} did not answer"
                return ws
            first = await dealer.recv_multipart()
            if first[:1] != [b"opened"]:
                reason = (first[2] if len(first) > 2 else b"refused").decode(errors="replace")
                return ws
            opened = True
            self._record(ticket, node, client, started, None)  # audited when it opens
            reason = await self._pump(ws, dealer, sid)
        finally:
            try:
                await dealer.send_multipart([b"close", sid], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            dealer.close()
            await ws.close(message=reason[:100].encode())
            self._ended(ticket, reason)
            if opened:
                self._record(ticket, node, client, started, reason)
            else:
                self.log.info("console_attempt_failed", vm=ticket.vm, node=node,
                              user=ticket.user, client=client, reason=reason)
        return ws

    async def _pump(self, ws: web.WebSocketResponse, dealer: zmq.asyncio.Socket,
                    sid: bytes) -> str:
        last = time.monotonic()

        async def to_agent() -> str:
            nonlocal last
            async for msg in ws:
                last = time.monotonic()
                if msg.type == WSMsgType.BINARY:
                    await dealer.send_multipart([b"data", sid, msg.data])
                elif msg.type == WSMsgType.TEXT:
                    await dealer.send_multipart([b"data", sid, msg.data.encode()])
                elif msg.type == WSMsgType.ERROR:
                    return "the browser went away"
            return "closed by the browser"

        async def to_browser() -> str:
            nonlocal last
            while True:
                frames = await dealer.recv_multipart()
                if frames[:1] == [b"data"] and len(frames) == 3:
                    last = time.monotonic()
                    await ws.send_bytes(frames[2])
                elif frames[:1] == [b"closed"]:
                    return (frames[2] if len(frames) > 2 else b"closed").decode(errors="replace")

        async def idle() -> str:
            while True:
                left = self.limits.idle_seconds - (time.monotonic() - last)
                if left <= 0:
                    return f"idle for {self.limits.idle_seconds:.0f} s"
                await asyncio.sleep(left)

        tasks = [asyncio.ensure_future(c) for c in (to_agent(), to_browser(), idle())]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.limits.max_session_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return f"the session reached its {self.limits.max_session_seconds:.0f} s limit"
            try:
                return done.pop().result()
            except (ConnectionError, zmq.ZMQError) as exc:
                return f"relay ended: {exc}"
        finally:
            for t in tasks:
                t.cancel()

    def _record(self, ticket: Ticket, node: str, client: str, started: float,
                reason: str | None) -> None:
        """The audit record and history row of a session: once when it opens (who, from
        where, which VM on which node), once when it ends (how long, why)."""
        ended = time.time()
        c = self.controller
        at = audit_time(started)
        if reason is None:
            self.log.info("console_session_started", vm=ticket.vm, node=node, user=ticket.user,
                          client=client)
            c.audit.write([AuditRecord(
                at=at, who=f"user:{ticket.user}", outcome="session-open", kind="console",
                reconciler="web", action=f"console of {ticket.vm} on {node}",
                resource=ticket.vm, verdict="session", why=f"opened from {client}")])
            return
        self.log.info("console_session_ended", vm=ticket.vm, node=node, user=ticket.user,
                      client=client, reason=reason)
        c.audit.write([AuditRecord(
            at=at, who=f"user:{ticket.user}", outcome="session", kind="console",
            reconciler="web", action=f"console of {ticket.vm} on {node}", resource=ticket.vm,
            verdict="session",
            why=f"from {client}, {time.strftime('%H:%M:%SZ', time.gmtime(started))} to "
                f"{time.strftime('%H:%M:%SZ', time.gmtime(ended))}: {reason}",
            duration_s=round(ended - started, 3))])
        if c.history is not None:
            c.history.add([Event(at=started, kind="console", vm=ticket.vm, node=node,
                                 detail=f"{ticket.user}: {reason}",
                                 duration_s=round(ended - started, 3))])
