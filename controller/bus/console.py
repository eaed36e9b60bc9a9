"""The console relay between the controller and a node's VNC servers, over CURVE.

VNC stays bound to 127.0.0.1 on every host (VNC itself is not safe on a network). The agent on
the VM's node runs `ConsoleRelay`: a ROUTER socket (CURVE server, the agent's own keys; only
the controller's key is admitted) that opens a TCP connection to one of *its own guests'* VNC
ports on loopback -- never any other port -- and relays bytes both ways. The controller side
(`open_session`) is a DEALER per console session.

Frames (multipart): controller -> agent `open SID PORT`, `data SID BYTES`, `close SID`;
agent -> controller `opened SID`, `data SID BYTES`, `closed SID REASON`.

The same authenticated channel carries the controller's few requests of an agent (`export SID
DOMAIN PATH`: write a running domain's XML to the shared storage, for enrollment; `simulate SID
BEFORE AFTER TIMEOUT`: the node's own scheduler on a CIB pair, for a preview by the DC's
Pacemaker version while a cluster is mixed), answered `done SID RESULT` or `refused SID
REASON` (`request` is the controller side). A request runs on the relay's thread: consoles
on that node wait while its crm_simulate runs.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import zmq

from controller.bus.keys import CONSOLE_DOMAIN, Curve, curve_client, curve_server
from controller.logs import logger
from controller.threads import Background

MAX_SESSIONS = 16
CHUNK = 65536
# A request's frames (a CIB to preview, compressed) and its answer: larger than a console
# chunk; only the controller's key is admitted on this socket.
MAX_REQUEST = 16 << 20
OPEN_TIMEOUT = 5.0


def console_endpoint(agent_endpoint: str) -> str:
    """Our convention: the console ROUTER listens on the agent's PUB port + 2."""
    if agent_endpoint.startswith("tcp://"):
        host, _, port = agent_endpoint[6:].rpartition(":")
        return f"tcp://{host}:{int(port) + 2}"
    return agent_endpoint + "-console"


@dataclass
class _Session:
    peer: bytes
    sid: bytes
    sock: socket.socket


class ConsoleRelay:
    """The agent side: relays the controller's sessions to this node's guests' VNC ports."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, curve: Curve | None,
                 vnc_ports: Callable[[], set[int]],
                 requests: Mapping[bytes, Callable[[list[bytes]], bytes]] | None = None):
        self.vnc_ports = vnc_ports
        # verb -> handler(args) -> result; a handler raises RequestRefused to refuse
        self.requests = dict(requests or {})
        self.log = logger(component="console-relay")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST)
        self.router.linger = 0
        self.router.zap_domain = CONSOLE_DOMAIN.encode()  # only the controller's key (keys.py)
        curve_server(self.router, curve)
        self.router.bind(endpoint)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sessions: dict[tuple[bytes, bytes], _Session] = {}
        self._by_fd: dict[int, _Session] = {}
        self._bg = Background("console-relay", self._run)

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        self._bg.start()

    def stop(self) -> None:
        self.close()

    def close(self) -> None:
        self._bg.stop(timeout=5)
        for s in list(self._sessions.values()):
            self._end(s, "agent stopping")
        self.router.close()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._bg.beat()
            poller = zmq.Poller()
            poller.register(self.router, zmq.POLLIN)
            for fd in self._by_fd:
                poller.register(fd, zmq.POLLIN)
            try:
                ready = dict(poller.poll(500))
            except zmq.ZMQError:
                continue
            for fd in [f for f in ready if isinstance(f, int)]:
                s = self._by_fd.get(fd)
                if s is not None:
                    self._from_vnc(s)
            if self.router in ready:
                for _ in range(256):  # a burst, then back to the sockets
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._from_controller(frames)
                    except Exception as exc:  # noqa: BLE001 - no frame may end the relay
                        self.log.warning("console_frame_rejected", error=str(exc))

    def _reply(self, peer: bytes, *frames: bytes) -> None:
        try:
            self.router.send_multipart([peer, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the controller went away; its session ends on its side

    def _from_controller(self, frames: list[bytes]) -> None:
        if len(frames) < 3:
            return
        peer, verb, sid = frames[0], frames[1], frames[2]
        handler = self.requests.get(verb)
        if handler is not None:
            try:
                self._reply(peer, b"done", sid, handler(frames[3:]))
            except RequestRefused as exc:
                self._reply(peer, b"refused", sid, str(exc).encode())
            return
        s = self._sessions.get((peer, sid))
        if verb == b"open" and len(frames) == 4 and s is None:
            port = int(frames[3]) if frames[3].isdigit() else -1
            if port not in self.vnc_ports():
                self._reply(peer, b"closed", sid, b"not a VNC port of a guest on this node")
                return
            if len(self._sessions) >= MAX_SESSIONS:
                self._reply(peer, b"closed", sid, b"too many console sessions on this node")
                return
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=OPEN_TIMEOUT)
            except OSError as exc:
                self._reply(peer, b"closed", sid, f"cannot reach VNC: {exc}".encode())
                return
            sock.settimeout(10.0)  # sends; reads only happen when poll says so
            s = _Session(peer, sid, sock)
            self._sessions[(peer, sid)] = s
            self._by_fd[sock.fileno()] = s
            self.log.info("console_opened", port=port)
            self._reply(peer, b"opened", sid)
        elif verb == b"data" and len(frames) == 4 and s is not None:
            try:
                s.sock.sendall(frames[3])
            except OSError as exc:
                self._end(s, f"VNC write failed: {exc}")
        elif verb == b"close" and s is not None:
            self._end(s, "closed by the controller", tell=False)

    def _from_vnc(self, s: _Session) -> None:
        try:
            data = s.sock.recv(CHUNK)
        except OSError as exc:
            self._end(s, f"VNC read failed: {exc}")
            return
        if not data:
            self._end(s, "the guest's VNC server closed the connection")
            return
        self._reply(s.peer, b"data", s.sid, data)

    def _end(self, s: _Session, reason: str, tell: bool = True) -> None:
        self._sessions.pop((s.peer, s.sid), None)
        self._by_fd.pop(s.sock.fileno(), None)
        try:
            s.sock.close()
        except OSError:
            pass
        if tell:
            self._reply(s.peer, b"closed", s.sid, reason.encode())
        self.log.info("console_closed", reason=reason)


class RequestRefused(Exception):
    """An agent's answer to a request it did not carry out, in words for the controller."""


REQUEST_TIMEOUT = 30.0


def request(endpoint: str, curve: Curve | None, server_key: bytes | None, verb: bytes,
            *args: bytes, timeout: float = REQUEST_TIMEOUT) -> bytes:
    """The controller side of one request: its result, or RequestRefused / TimeoutError."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    dealer = open_session(ctx, endpoint, curve, server_key, max_size=MAX_REQUEST)
    try:
        sid = secrets.token_bytes(8)
        dealer.send_multipart([verb, sid, *args])
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not dealer.poll(int(left * 1000)):
                break
            frames = dealer.recv_multipart()
            if len(frames) >= 3 and frames[1] == sid:
                if frames[0] == b"done":
                    return frames[2]
                raise RequestRefused(frames[2].decode(errors="replace"))
        raise TimeoutError(f"the agent at {endpoint} did not answer in {timeout:.0f} s")
    finally:
        dealer.close()


S = TypeVar("S", bound="zmq.Socket[Any]")


def open_session(ctx: zmq.Context[S], endpoint: str, curve: Curve | None,
                 server_key: bytes | None, max_size: int = CHUNK + 1024) -> S:
    """The controller side: a DEALER to one agent's relay (CURVE client when keys are set);
    a plain or an asyncio socket, after the context's kind."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.setsockopt(zmq.MAXMSGSIZE, max_size)
    curve_client(dealer, curve, server_key)
    dealer.connect(endpoint)
    return dealer
