"""Events on the bus: an envelope `{v, source, seq, sent_at, kind, payload}` in msgpack.

Payloads are small frozen structs, one per kind (DESIGN.md section 4). Decoding is strict: a
frame that is not a well-formed envelope of a known kind and version raises BusError with a
reason, which the subscriber counts (`kvm_warden_bus_rejected_total{reason}`) and drops.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from controller.model.observed import Domain

VERSION = 1


class BusError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class DomainLifecycle(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A libvirt lifecycle event (virDomainEventType/Detail, named as virsh names them)."""

    node: str
    domain: str
    uuid: str = ""
    event: str  # started | stopped | suspended | resumed | crashed | ...
    detail: str = ""  # e.g. failed, destroyed, migrated, shutdown, ioerror
    state: str = ""  # the domain state after the event, as `virsh domstate`


class DomainSeen(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A full listing of one node's domains (periodic, and after every reconnect)."""

    node: str
    connected: bool = True
    domains: tuple[Domain, ...] = ()


class QuorumChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    node: str
    state: str = "ok"  # ok | unknown (corosync not running or not answering)
    quorate: bool | None = None
    members: tuple[str, ...] = ()
    expected_votes: int | None = None
    total_votes: int | None = None


class AlertReceived(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A Pacemaker alert (CRM_alert_* environment of the alert agent)."""

    kind: str
    node: str = ""
    resource: str = ""
    task: str = ""
    rc: str = ""
    desc: str = ""
    status: str = ""
    target_rc: str = ""
    timestamp: str = ""
    sequence: int | None = None  # CRM_alert_node_sequence: increases by one per alert, per node


class Mount(msgspec.Struct, frozen=True, kw_only=True):
    mountpoint: str
    fstype: str
    source: str


class MountsSeen(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    node: str
    mounts: tuple[Mount, ...] = ()
    lockspaces: tuple[str, ...] = ()


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    node: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A publisher's whole current state: the last payload of each kind it publishes."""

    node: str
    payloads: tuple[DomainSeen | QuorumChanged | MountsSeen, ...] = ()


Payload = (
    DomainLifecycle | DomainSeen | QuorumChanged | AlertReceived | MountsSeen | Heartbeat | Snapshot
)

KINDS = {cls.__name__: cls for cls in (DomainLifecycle, DomainSeen, QuorumChanged, AlertReceived,
                                       MountsSeen, Heartbeat, Snapshot)}


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    v: int
    source: str
    seq: int
    sent_at: float
    kind: str
    payload: Payload


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def envelope(source: str, seq: int, payload: Payload) -> Envelope:
    return Envelope(v=VERSION, source=source, seq=seq, sent_at=time.time(),
                    kind=type(payload).__name__, payload=payload)


def encode(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode(data: bytes) -> Envelope:
    try:
        env = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raw: Any = None
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            pass
        if isinstance(raw, dict) and raw.get("v") not in (None, VERSION):
            raise BusError("version", f"envelope version {raw.get('v')!r}") from None
        if isinstance(raw, dict) and raw.get("kind") not in KINDS:
            raise BusError("unknown-kind", str(raw.get("kind"))[:40]) from None
        raise BusError("invalid", str(exc)[:200]) from None
    except msgspec.DecodeError as exc:
        raise BusError("undecodable", str(exc)[:200]) from None
    if env.v != VERSION:
        raise BusError("version", f"envelope version {env.v}")
    if env.kind not in KINDS:
        raise BusError("unknown-kind", env.kind[:40])
    if env.kind != type(env.payload).__name__:
        raise BusError("invalid", f"kind {env.kind} does not match its payload")
    return env


def to_json(env: Envelope) -> bytes:
    return msgspec.json.encode(env)
