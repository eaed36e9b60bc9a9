"""The console relay over real ZeroMQ with CURVE: the agent opens only its own guests' VNC
ports on loopback, relays bytes both ways, and tells the controller when the guest's side ends."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import zmq

from controller.bus.console import ConsoleRelay, open_session
from controller.bus.keys import Curve, generate_keys, start_authenticator


@pytest.fixture
def ctx():  # type: ignore[no-untyped-def]
    c = zmq.Context()
    yield c
    c.term()


def vnc_server() -> tuple[socket.socket, int]:
    """A stand-in VNC server on loopback: greets like RFB and echoes what it receives."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        # The test closes the server when it is done, accepted or not: that ends this thread
        # quietly (an exception here would surface in whichever test runs next).
        try:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"RFB 003.008\n")
                while data := conn.recv(4096):
                    if data == b"bye":
                        return
                    conn.sendall(data.upper())
        except OSError:
            return

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def keys(tmp_path: Path) -> tuple[Curve, Curve]:
    for name in ("kvm2", "controller"):
        generate_keys(tmp_path / "keys", name)
    for side, peer in (("agent", "controller"), ("ctl", "kvm2")):
        (tmp_path / side).mkdir()
        (tmp_path / side / f"{peer}.key").write_bytes((tmp_path / "keys" / f"{peer}.key").read_bytes())
    return (Curve.load(tmp_path / "keys" / "kvm2.key_secret", tmp_path / "agent"),
            Curve.load(tmp_path / "keys" / "controller.key_secret", tmp_path / "ctl"))


def test_a_session_reaches_a_guests_vnc_and_nothing_else(ctx: zmq.Context, tmp_path: Path) -> None:
    agent_curve, ctl_curve = keys(tmp_path)
    auth = start_authenticator(ctx, agent_curve)
    srv, port = vnc_server()
    relay = ConsoleRelay(ctx, "tcp://127.0.0.1:*", agent_curve, lambda: {port})
    relay.start()
    dealer = open_session(ctx, relay.endpoint, ctl_curve, ctl_curve.peer_key("kvm2"))
    try:
        dealer.send_multipart([b"open", b"s1", str(port).encode()])
        assert dealer.poll(5000)
        assert dealer.recv_multipart() == [b"opened", b"s1"]
        assert dealer.poll(5000) and dealer.recv_multipart() == [b"data", b"s1", b"RFB 003.008\n"]
        dealer.send_multipart([b"data", b"s1", b"hello"])
        assert dealer.poll(5000) and dealer.recv_multipart() == [b"data", b"s1", b"HELLO"]
        # The guest's side ends (a migration ends the source's qemu): the controller is told.
        dealer.send_multipart([b"data", b"s1", b"bye"])
        assert dealer.poll(5000)
        verb, sid, reason = dealer.recv_multipart()
        assert (verb, sid) == (b"closed", b"s1") and b"closed the connection" in reason
        # Any other loopback port (sshd, the CIB...) is refused: not a guest's VNC.
        dealer.send_multipart([b"open", b"s2", b"22"])
        assert dealer.poll(5000)
        assert dealer.recv_multipart() == [b"closed", b"s2", b"not a VNC port of a guest on this node"]
    finally:
        dealer.close()
        relay.close()
        auth.stop()
        srv.close()


def assert_refused(ctx: zmq.Context, agent_curve: Curve, client: Curve) -> None:
    """The relay never answers a session opened with `client`'s key."""
    auth = start_authenticator(ctx, agent_curve)
    srv, port = vnc_server()
    relay = ConsoleRelay(ctx, "tcp://127.0.0.1:*", agent_curve, lambda: {port})
    relay.start()
    dealer = open_session(ctx, relay.endpoint, client, agent_curve.public)
    try:
        dealer.send_multipart([b"open", b"s1", str(port).encode()])
        assert not dealer.poll(2000), "this key must not reach the relay"
    finally:
        dealer.close()
        relay.close()
        auth.stop()
        srv.close()


def test_a_controller_without_an_admitted_key_gets_nothing(ctx: zmq.Context, tmp_path: Path) -> None:
    agent_curve, _ = keys(tmp_path)
    generate_keys(tmp_path / "other", "intruder")
    (tmp_path / "other-allow").mkdir()
    assert_refused(ctx, agent_curve,
                   Curve.load(tmp_path / "other" / "intruder.key_secret", tmp_path / "other-allow"))


def test_another_nodes_agent_key_opens_no_console(ctx: zmq.Context, tmp_path: Path) -> None:
    # kvm1's key is on kvm2's allow-list (the bus admits it), but the relay opens guests'
    # screens for the controller's key only.
    agent_curve, _ = keys(tmp_path)
    generate_keys(tmp_path / "keys", "kvm1")
    (tmp_path / "agent" / "kvm1.key").write_bytes((tmp_path / "keys" / "kvm1.key").read_bytes())
    assert_refused(ctx, agent_curve,
                   Curve.load(tmp_path / "keys" / "kvm1.key_secret", tmp_path / "agent"))
