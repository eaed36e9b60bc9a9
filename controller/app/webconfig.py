"""The web configuration file, in the format of Prometheus exporters (exporter-toolkit):

    tls_server_config:
      cert_file: /etc/kvm-warden/tls.crt
      key_file: /etc/kvm-warden/tls.key
    basic_auth_users:
      ops: $2b$12$...   # bcrypt hash (htpasswd -nBC 12 ops, or python's bcrypt.hashpw)

Operators configure node_exporter this way already; kvm-warden reads the same keys. Checks at
load: unknown keys are errors, the TLS pair is loaded into an SSL context (so a wrong path or a
key that does not match fails at start, not at the first scrape), every password is a bcrypt
hash. Without such a file the HTTP port stays on loopback (run.py refuses anything else).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
import time
from pathlib import Path
from typing import Annotated

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from controller.model.errors import WardenError

BCRYPT = r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"
CACHE_SECONDS = 60.0  # a verified password is not re-hashed (bcrypt costs ~0.2 s) for this long
# Checked when the user is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY = bcrypt.hashpw(b"kvm-warden", bcrypt.gensalt(rounds=10))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TlsServerConfig(_Strict):
    cert_file: str
    key_file: str
    min_version: str = "TLS12"


class WebConfig(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, Annotated[str, StringConstraints(pattern=BCRYPT)]] = Field(
        default_factory=dict)


class WebConfigError(WardenError):
    pass


class WebAuth:
    """The loaded configuration: an SSL context (or None) and the Basic-auth check."""

    def __init__(self, config: WebConfig, source: str):
        self.config = config
        self.source = source
        self.tls: ssl.SSLContext | None = None
        self._ok: dict[bytes, float] = {}  # sha256(user:password) -> verified at
        self._lock = threading.Lock()
        tls = config.tls_server_config
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = {"TLS12": ssl.TLSVersion.TLSv1_2,
                                   "TLS13": ssl.TLSVersion.TLSv1_3}.get(
                                       tls.min_version, ssl.TLSVersion.TLSv1_2)
            try:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(f"{source}: tls_server_config: cannot load "
                                     f"{tls.cert_file} / {tls.key_file}: {exc}") from None
            self.tls = ctx

    @property
    def users(self) -> bool:
        return bool(self.config.basic_auth_users)

    def allowed(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries a configured user's password."""
        return not self.users or self.user(authorization) is not None

    def user(self, authorization: str | None) -> str | None:
        """The configured user whose password the `Authorization` header carries, if any."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(),
                                                   validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not sep or len(password) > 1024:
            return None
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        now = time.monotonic()
        with self._lock:
            at = self._ok.get(key)
            if at is not None and now - at < CACHE_SECONDS:
                return user
        stored = self.config.basic_auth_users.get(user)
        ok = bcrypt.checkpw(password.encode(), stored.encode() if stored else _DUMMY)
        ok = ok and stored is not None
        if not ok:
            return None
        with self._lock:
            self._ok = {k: t for k, t in self._ok.items() if now - t < CACHE_SECONDS}
            self._ok[key] = now
        return user


def load_web_config(path: str | Path) -> WebAuth:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{p}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{p}: not YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{p}: expected a mapping with tls_server_config and/or "
                             "basic_auth_users")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(x) for x in err["loc"])
            msg = "not a bcrypt hash ($2b$...)" if err["type"] == "string_pattern_mismatch" \
                else err["msg"]
            problems.append(f"{p}: {field}: {msg}")
        raise WebConfigError("\n".join(problems)) from None
    return WebAuth(config, str(p))
