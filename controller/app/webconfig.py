"""The web configuration file, in the format of Prometheus exporters (exporter-toolkit):

    tls_server_config:
      cert_file: /etc/kvm-warden/tls.crt
      key_file: /etc/kvm-warden/tls.key
      min_version: TLS12            # or TLS13
    basic_auth_users:
      ops: $2b$12$...   # bcrypt hash (htpasswd -nBC 12 ops, or python's bcrypt.hashpw)
      grafana: $2b$12$...
    kvm_warden:                     # kvm-warden's own extension
      roles: {ops: operator}        # viewer (the default) | operator (consoles) | admin
      host_names: [warden.example.org]
      console: {max_session_seconds: 28800, idle_seconds: 900, tickets_per_user: 8,
                sessions_per_user: 4}
      anonymous_viewers: false      # true: on loopback, no credentials = a viewer

Operators configure node_exporter this way already; kvm-warden reads the same keys. Checks at
load: unknown keys are errors, the TLS pair is loaded into an SSL context (so a wrong path or a
key that does not match fails at start, not at the first scrape), every password is a bcrypt
hash. Without such a file the HTTP port stays on loopback (run.py refuses anything else).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from controller.model.errors import WardenError

BCRYPT = r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"
CACHE_SECONDS = 60.0  # a verified password is not re-hashed (bcrypt costs ~0.2 s) for this long
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; bcrypt 5 refuses longer passwords
Role = Literal["viewer", "operator", "admin"]
RANK: dict[str, int] = {"open": 0, "ticket": 0, "viewer": 1, "operator": 2, "admin": 3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TlsServerConfig(_Strict):
    cert_file: str
    key_file: str
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class ConsoleLimits(_Strict):
    max_session_seconds: Annotated[float, Field(gt=0)] = 8 * 3600.0
    idle_seconds: Annotated[float, Field(gt=0)] = 900.0
    tickets_per_user: Annotated[int, Field(gt=0, le=256)] = 8
    # Open sessions per user, all nodes together (each agent takes 16 in all): one operator
    # cannot take every console of a node.
    sessions_per_user: Annotated[int, Field(gt=0, le=64)] = 4


class WardenWeb(_Strict):
    """kvm-warden's extension of the exporter-toolkit format (its own key, so the rest stays
    what node_exporter reads)."""

    # Users not listed are viewers: they see everything, change nothing, open no console.
    roles: dict[str, Role] = Field(default_factory=dict)
    # The names browsers reach this port by (besides loopback's own): a request for another
    # Host is refused (DNS rebinding through a tunnel or a proxy).
    host_names: tuple[str, ...] = ()
    console: ConsoleLimits = Field(default_factory=ConsoleLimits)
    # On a loopback port only: a request without credentials may look (as a viewer). Writes
    # and consoles always need a named user. Off loopback it is ignored.
    anonymous_viewers: bool = False


class WebConfig(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, Annotated[str, StringConstraints(pattern=BCRYPT)]] = Field(
        default_factory=dict)
    kvm_warden: WardenWeb = Field(default_factory=WardenWeb)


class WebConfigError(WardenError):
    pass


@dataclass(frozen=True)
class Login:
    """The answer to one Authorization header: the user and role, or why not (for the 401)."""

    user: str | None
    role: Role | None = None
    problem: str = "unauthorized"


class WebAuth:
    """The loaded configuration: an SSL context (or None), the users and their roles, and the
    Basic-auth check at a constant cost."""

    def __init__(self, config: WebConfig, source: str):
        self.config = config
        self.source = source
        self.tls: ssl.SSLContext | None = None
        self._ok: dict[bytes, float] = {}  # sha256(user:password) -> verified at
        self._lock = threading.Lock()
        # A wrong user name costs what a wrong password does: the stand-in hash has the cost of
        # the configured ones (the highest), not bcrypt's default.
        costs = [int(h.split("$")[2]) for h in config.basic_auth_users.values()]
        self._dummy = bcrypt.hashpw(b"kvm-warden", bcrypt.gensalt(rounds=max(costs or [4])))
        self.csrf_secret = secrets.token_bytes(32)  # per process (app/policy.py's CSRF tokens)
        tls = config.tls_server_config
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = {"TLS12": ssl.TLSVersion.TLSv1_2,
                                   "TLS13": ssl.TLSVersion.TLSv1_3}[tls.min_version]
            try:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(f"{source}: tls_server_config: cannot load "
                                     f"{tls.cert_file} / {tls.key_file}: {exc}") from None
            self.tls = ctx

    @property
    def users(self) -> bool:
        return bool(self.config.basic_auth_users)

    @property
    def console_limits(self) -> ConsoleLimits:
        return self.config.kvm_warden.console

    def role_of(self, user: str) -> Role:
        return self.config.kvm_warden.roles.get(user, "viewer")

    def quick(self, authorization: str | None) -> Login | None:
        """The answer when it needs no bcrypt (no or malformed credentials, a password bcrypt
        cannot read, a credential verified in the last minute), else None: cheap enough for
        the event loop, so a cached login never waits behind hashes."""
        parsed = self._parse(authorization)
        if isinstance(parsed, Login):
            return parsed
        user, password = parsed
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            at = self._ok.get(key)
            if at is not None and time.monotonic() - at < CACHE_SECONDS:
                return Login(user, self.role_of(user))
        return None

    def _parse(self, authorization: str | None) -> Login | tuple[str, str]:
        if not authorization or not authorization.startswith("Basic "):
            return Login(None, problem="credentials required")
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(),
                                                   validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return Login(None, problem="malformed Basic credentials")
        if not sep:
            return Login(None, problem="malformed Basic credentials")
        if len(password.encode()) > BCRYPT_MAX_BYTES:
            return Login(None, problem=f"password longer than bcrypt's {BCRYPT_MAX_BYTES} bytes")
        return user, password

    def login(self, authorization: str | None) -> Login:
        """Check an `Authorization: Basic` header (blocking: bcrypt; run it off the event
        loop). Every wrong answer costs one bcrypt of the configured cost."""
        quick = self.quick(authorization)
        if quick is not None:
            return quick
        parsed = self._parse(authorization)
        assert not isinstance(parsed, Login)
        user, password = parsed
        secret = password.encode()
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        now = time.monotonic()
        stored = self.config.basic_auth_users.get(user)
        ok = bcrypt.checkpw(secret, stored.encode() if stored else self._dummy)
        if not ok or stored is None:
            return Login(None, problem="wrong user or password")
        with self._lock:
            self._ok = {k: t for k, t in self._ok.items() if now - t < CACHE_SECONDS}
            self._ok[key] = now
        return Login(user, self.role_of(user))


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
