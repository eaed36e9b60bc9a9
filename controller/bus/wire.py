"""The bus's wire format: topics, msgpack envelopes and their strict decoding, timing constants.

A frame that is not a well-formed envelope of a known kind and version raises BusError with a
reason, which the subscriber counts (`kvm_warden_bus_rejected_total{reason}`) and drops.
"""

from __future__ import annotations

from typing import Any

import msgspec

from controller.model.errors import BusError
from controller.model.events import KINDS, VERSION, Envelope, Payload

HWM = 10_000  # messages; past it PUB drops (and the subscriber resyncs), memory stays bounded
HEARTBEAT_SECONDS = 2.0
MISSED_HEARTBEATS = 3
SNAPSHOT_REQUEST = b"SNAPSHOT"




_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)

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
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: e.g. a key not valid UTF-8
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


def topic_for(payload: Payload, node: str) -> bytes:
    prefix = {
        "DomainLifecycle": "libvirt", "DomainSeen": "libvirt", "QuorumChanged": "corosync",
        "MountsSeen": "storage", "Heartbeat": "heartbeat", "AlertReceived": "pacemaker",
    }.get(type(payload).__name__, "other")
    return f"{prefix}.{node}".encode() if prefix != "pacemaker" else b"pacemaker"
