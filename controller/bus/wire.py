"""The bus's wire format: topics, msgpack envelopes and their strict decoding, timing constants.

A frame that is not a well-formed envelope of a known kind and version raises BusError with a
reason, which the subscriber counts (`kvm_warden_bus_rejected_total{reason}`) and drops.
"""

from __future__ import annotations

from typing import Any

import msgspec

from controller.model.errors import BusError
from controller.model.events import VERSION, WIRE_KINDS, AlertReceived, Envelope, Payload, Snapshot, topic
from controller.model.names import NODE_NAME

MAX_SEQ = 2**53  # sequence numbers stay exact in every JSON reader
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
        except (msgspec.DecodeError, ValueError):  # found by the fuzz suite: a non-UTF-8 key
            pass
        if isinstance(raw, dict) and isinstance(raw.get("v"), int) and raw.get("v") != VERSION:
            raise BusError("version", f"envelope version {raw.get('v')!r}") from None
        if isinstance(raw, dict) and (not isinstance(raw.get("kind"), str)
                                      or raw.get("kind") not in WIRE_KINDS):
            raise BusError("unknown-kind", str(raw.get("kind"))[:40]) from None
        raise BusError("invalid", str(exc)[:200]) from None
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: e.g. a key not valid UTF-8
        raise BusError("undecodable", str(exc)[:200]) from None
    if env.v != VERSION:
        raise BusError("version", f"envelope version {env.v}")
    if env.kind not in WIRE_KINDS:
        raise BusError("unknown-kind", env.kind[:40])
    if env.kind != type(env.payload).__name__:
        raise BusError("invalid", f"kind {env.kind} does not match its payload")
    if not 0 <= env.seq <= MAX_SEQ:
        raise BusError("invalid", f"sequence number {env.seq} out of range")
    if not NODE_NAME.fullmatch(env.source):
        raise BusError("invalid", "source is not a node name")
    # A publisher speaks for its own node only: a listing or event it claims for another node
    # would put domains there (false split-brain findings that outlive it).
    # An alert names the node it is about (a fenced node, a resource's node), not its sender.
    node = env.source if isinstance(env.payload, AlertReceived) else getattr(
        env.payload, "node", env.source)
    if node != env.source:
        raise BusError("forged-source", f"{env.source} sent a {env.kind} for {str(node)[:64]}")
    if isinstance(env.payload, Snapshot):  # what a snapshot carries speaks for its sender too
        for inner in env.payload.payloads:
            if inner.node != env.source:
                raise BusError("forged-source",
                               f"{env.source} sent a snapshot with a {type(inner).__name__} for "
                               f"{inner.node[:64]}")
    return env


def to_json(env: Envelope) -> bytes:
    return msgspec.json.encode(env)


def topic_for(payload: Payload, node: str) -> bytes:
    return topic(payload, node)
