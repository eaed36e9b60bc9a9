"""The console in the browser: a WebSocket on the controller's web port relayed to the agent on
the VM's node (bus/console.py, CURVE), which connects to the guest's VNC on that node's loopback.

A page first asks for a ticket (`POST /api/vms/NAME/console`, behind the web configuration's
users); the ticket -- random, single use, valid for 30 s -- then opens the WebSocket
(`/console/NAME/ws?ticket=...`), so the console never depends on how a browser passes basic
credentials to a WebSocket. The VM's node and VNC port are resolved when the socket opens: after a
live migration the page's reconnect lands on the new node. Every session is an audit record
(user, VM, node, start, end) and a history event.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import zmq
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from controller.bus.console import OPEN_TIMEOUT, open_session
from controller.bus.keys import Curve
from controller.engine.audit import AuditRecord
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
    ctx: zmq.Context[zmq.Socket[bytes]] = field(default_factory=zmq.Context.instance)
    _tickets: dict[str, Ticket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.log = logger(component="console")

    def where(self, vm: str) -> tuple[str, int] | None:
        """(node, VNC port) of a VM running on exactly one node, as the last pass saw it."""
        row = next((r for r in self.controller.last_rows if r.vm == vm), None)
        if row is None or len(row.nodes) != 1 or not row.vnc_port:
            return None
        return row.nodes[0], row.vnc_port

    def ticket(self, vm: str, user: str) -> tuple[str, str]:
        """A single-use ticket for `vm`'s console, and the node it runs on. Raises LookupError."""
        place = self.where(vm)
        if place is None:
            raise LookupError(f"{vm} is not running on one node with a VNC console")
        if place[0] not in self.agents:
            raise LookupError(f"no agent known on {place[0]}")
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
            if len(self._tickets) >= MAX_TICKETS:
                raise LookupError("too many open console tickets")
            self._tickets[token] = Ticket(vm=vm, user=user, expires=now + TICKET_SECONDS)
        return token, place[0]

    def redeem(self, token: str, vm: str) -> Ticket | None:
        with self._lock:
            t = self._tickets.pop(token, None)
        if t is None or t.vm != vm or t.expires < time.monotonic():
            return None
        return t

    # -- one session: WebSocket <-> agent ------------------------------------------------------
    def serve(self, sock: socket.socket, request: bytes, ticket: Ticket) -> None:
        """Run one console session on the handler's socket (after the HTTP request was read)."""
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(request)
        req = next((e for e in ws.events() if isinstance(e, Request)), None)
        if req is None:
            return
        place = self.where(ticket.vm)
        if place is None or place[0] not in self.agents:
            sock.sendall(ws.send(RejectConnection(status_code=409)))
            return
        node, port = place
        sub = "binary" if "binary" in req.subprotocols else None
        sock.sendall(ws.send(AcceptConnection(subprotocol=sub)))
        key = self.curve.peer_key(node) if self.curve is not None else None
        dealer = open_session(self.ctx, self.agents[node], self.curve, key)
        sid = secrets.token_bytes(8)
        started = time.time()
        reason = "closed"
        try:
            dealer.send_multipart([b"open", sid, str(port).encode()])
            if not dealer.poll(int(OPEN_TIMEOUT * 1000)):
                reason = f"the agent on {node} did not answer"
                return
            first = dealer.recv_multipart()
            if first[:1] != [b"opened"]:
                reason = (first[2] if len(first) > 2 else b"refused").decode(errors="replace")
                return
            self.log.info("console_session_started", vm=ticket.vm, node=node, user=ticket.user)
            reason = self._pump(sock, ws, dealer, sid)
        finally:
            try:
                dealer.send_multipart([b"close", sid], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            dealer.close()
            try:
                sock.sendall(ws.send(CloseConnection(code=1000, reason=reason[:100])))
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            self._record(ticket, node, started, reason)

    def _pump(self, sock: socket.socket, ws: WSConnection, dealer: zmq.Socket[bytes],
              sid: bytes) -> str:
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(sock.fileno(), zmq.POLLIN)
        while True:
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            ready = dict(poller.poll(0 if pending else 30_000))
            if pending or sock.fileno() in ready:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None
                except OSError:
                    return "the browser went away"
                if data is not None:
                    if not data:
                        return "the browser closed the connection"
                    ws.receive_data(data)
                    for ev in ws.events():
                        if isinstance(ev, BytesMessage):
                            dealer.send_multipart([b"data", sid, bytes(ev.data)])
                        elif isinstance(ev, TextMessage):
                            dealer.send_multipart([b"data", sid, ev.data.encode()])
                        elif isinstance(ev, Ping):
                            sock.sendall(ws.send(ev.response()))
                        elif isinstance(ev, CloseConnection):
                            return "closed by the browser"
            if dealer in ready:
                frames = dealer.recv_multipart()
                if frames[:1] == [b"data"] and len(frames) == 3:
                    sock.sendall(ws.send(BytesMessage(data=frames[2])))
                elif frames[:1] == [b"closed"]:
                    return (frames[2] if len(frames) > 2 else b"closed").decode(errors="replace")

    def _record(self, ticket: Ticket, node: str, started: float, reason: str) -> None:
        ended = time.time()
        self.log.info("console_session_ended", vm=ticket.vm, node=node, user=ticket.user,
                      reason=reason)
        c = self.controller
        c.audit.write([AuditRecord(
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            who=f"user:{ticket.user}", outcome="session", kind="console", reconciler="web",
            action=f"console of {ticket.vm} on {node}", resource=ticket.vm, verdict="session",
            why=f"from {time.strftime('%H:%M:%SZ', time.gmtime(started))} to "
                f"{time.strftime('%H:%M:%SZ', time.gmtime(ended))}: {reason}",
            duration_s=round(ended - started, 3))])
        if c.history is not None:
            c.history.add([Event(at=started, kind="console", vm=ticket.vm, node=node,
                                 detail=f"{ticket.user}: {reason}",
                                 duration_s=round(ended - started, 3))])
