"""CURVE key pairs and the ZAP allow-list: who may publish to and read from the bus.

Each side has its own key pair; a server accepts a client only when the client's public key is
in the allow-list directory (ZeroMQ's ZAP handler, run by pyzmq's ThreadAuthenticator).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from controller import metrics
from controller.logs import logger
from controller.model.errors import WardenError


@dataclass(frozen=True)
class Curve:
    """Key material for one side: its own key pair and the directory of peers it trusts."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, secret_file: Path, allow_dir: Path) -> Curve:
        try:
            mode = secret_file.stat().st_mode
            public, secret = zmq.auth.load_certificate(str(secret_file))
        except (OSError, ValueError) as exc:
            raise WardenError(f"{secret_file}: cannot read a CURVE key: {exc}") from None
        if secret is None:
            raise WardenError(f"{secret_file} holds no secret key (is it the public .key file?)")
        if mode & 0o077:
            raise WardenError(f"{secret_file} is readable by others (mode {mode & 0o777:o}): "
                              "chmod 600 it, or generate a new key pair")
        if not allow_dir.is_dir():
            raise WardenError(f"{allow_dir}: the allow-list directory does not exist")
        return cls(public, secret, allow_dir)

    def peer_key(self, name: str) -> bytes:
        path = self.allow_dir / f"{name}.key"
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise WardenError(f"no usable public key for {name!r} in the allow-list: {path}: "
                              f"{exc}") from None
        return public


def generate_keys(directory: Path, name: str, force: bool = False, owner: str | None = None
                  ) -> tuple[Path, Path]:
    """A new key pair; the secret is created 0600 (no window in which others may read it),
    owned by `owner` (USER or USER:GROUP, e.g. the service's kvm-warden) when given."""
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise WardenError(f"{secret} already exists: keep it, or pass --force to replace it "
                          "(every peer then needs the new public key)")
    old = os.umask(0o077)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
    except OSError as exc:
        raise WardenError(f"{directory}: cannot write keys: {exc.strerror}") from None
    finally:
        os.umask(old)
    Path(made_public).chmod(0o644)  # the public half is meant to be copied around
    if owner is not None:
        user, _, group = owner.partition(":")
        try:
            shutil.chown(made_secret, user, group or None)
        except (LookupError, OSError) as exc:
            raise WardenError(f"{made_secret}: cannot give it to {owner}: {exc}") from None
    return Path(made_public), Path(made_secret)


CONSOLE_DOMAIN = "console"  # the ZAP domain of the console relay's socket
CONTROLLER_KEY = "controller"  # the allow-list file name of the controller's public key


class _AllowList:
    """ZAP credentials provider: a client key must be in the allow-list directory."""

    def __init__(self, allow_dir: Path):
        self.allow_dir = allow_dir
        self.log = logger(component="bus-auth")

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            if domain == CONSOLE_DOMAIN:
                # The console relay opens guests' screens: the controller's key only, never
                # another node's agent (whose key the bus allow-list may also hold).
                allowed = {zmq.auth.load_certificate(
                    str(self.allow_dir / f"{CONTROLLER_KEY}.key"))[0]}
            else:
                allowed = set(zmq.auth.load_certificates(str(self.allow_dir)).keys())
        except Exception as exc:  # noqa: BLE001 - a broken allow-list refuses; it never kills ZAP
            metrics.BUS_AUTH_REFUSED.inc()
            self.log.error("allow_list_unreadable", path=str(self.allow_dir), error=str(exc))
            return False
        ok = key in allowed
        if not ok:
            metrics.BUS_AUTH_REFUSED.inc()
            self.log.warning("curve_key_refused", key=key.decode(errors="replace"))
        return ok


def start_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], curve: Curve) -> ThreadAuthenticator:
    auth = ThreadAuthenticator(ctx)
    auth.start()
    allow = _AllowList(curve.allow_dir)
    # pyzmq looks providers up by the socket's ZAP domain: the console relay has its own.
    for domain in ("*", CONSOLE_DOMAIN):
        auth.configure_curve_callback(domain=domain, credentials_provider=allow)
    return auth


def curve_server(sock: zmq.Socket[bytes], curve: Curve | None) -> None:
    if curve is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_server = True


def curve_client(sock: zmq.Socket[Any], curve: Curve | None, server_key: bytes | None) -> None:
    if curve is not None and server_key is not None:
        sock.curve_secretkey = curve.secret
        sock.curve_publickey = curve.public
        sock.curve_serverkey = server_key
