"""CURVE key pairs and the ZAP allow-list: who may publish to and read from the bus.

Each side has its own key pair; a server accepts a client only when the client's public key is
in the allow-list directory (ZeroMQ's ZAP handler, run by pyzmq's ThreadAuthenticator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from controller import metrics
from controller.logs import logger


@dataclass(frozen=True)
class Curve:
    """Key material for one side: its own key pair and the directory of peers it trusts."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, secret_file: Path, allow_dir: Path) -> Curve:
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key")
        return cls(public, secret, allow_dir)

    def peer_key(self, name: str) -> bytes:
        public, _ = zmq.auth.load_certificate(str(self.allow_dir / f"{name}.key"))
        return public


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


class _AllowList:
    """ZAP credentials provider: a client key must be in the allow-list directory."""

    def __init__(self, allow_dir: Path):
        self.allow_dir = allow_dir
        self.log = logger(component="bus-auth")

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = set(zmq.auth.load_certificates(str(self.allow_dir)).keys())
        ok = key in allowed
        if not ok:
            metrics.BUS_AUTH_REFUSED.inc()
            self.log.warning("curve_key_refused", key=key.decode(errors="replace"))
        return ok


def start_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], curve: Curve) -> ThreadAuthenticator:
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(curve.allow_dir))
    return auth


def curve_server(sock: zmq.Socket[bytes], curve: Curve | None) -> None:
    if curve is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_server = True


def curve_client(sock: zmq.Socket[bytes], curve: Curve | None, server_key: bytes | None) -> None:
    if curve is not None and server_key is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_serverkey = server_key
