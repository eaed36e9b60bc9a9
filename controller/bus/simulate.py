"""The `simulate` request (bus/console.py): a preview by another node's Pacemaker scheduler.

While a rolling upgrade leaves the cluster mixed, the DC's scheduler decides what happens, and
this node's may be another version; the controller then sends the CIB pair to the agent of a
node of the DC's version, which runs its own crm_simulate (probes/pacemaker/simulate.run_pair)
and answers the transitions. Frames are zlib-compressed; a frame that inflates past MAX_CIB is
refused (the request comes only from the controller's key, yet nothing is trusted unbounded).
"""

from __future__ import annotations

import zlib

import msgspec

from controller.model.actions import TransitionStep
from controller.model.errors import ParseError

MAX_CIB = 256 << 20  # bytes of XML once inflated


class SimulateResult(msgspec.Struct, frozen=True, kw_only=True):
    base: tuple[TransitionStep, ...] | None
    steps: tuple[TransitionStep, ...]
    scheduler: str  # the answering node's Pacemaker, as Scheduler.__str__ says it


def pack(data: bytes) -> bytes:
    return zlib.compress(data, 3)


def unpack(data: bytes, what: str) -> bytes:
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(data, MAX_CIB)
    except zlib.error as exc:
        raise ParseError(f"{what}: not zlib data ({exc})", source="simulate request") from None
    if inflate.unconsumed_tail:
        raise ParseError(f"{what}: more than {MAX_CIB >> 20} MiB inflated",
                         source="simulate request")
    return out


def request_frames(before: bytes | None, after: bytes, timeout: float) -> list[bytes]:
    return [pack(before) if before is not None else b"", pack(after), f"{timeout:g}".encode()]


def parse_request(args: list[bytes]) -> tuple[bytes | None, bytes, float]:
    if len(args) != 3:
        raise ParseError("simulate BEFORE AFTER TIMEOUT: 3 frames", source="simulate request")
    try:
        timeout = min(max(float(args[2].decode()), 1.0), 300.0)
    except ValueError:
        raise ParseError("simulate: TIMEOUT is seconds", source="simulate request") from None
    before = unpack(args[0], "BEFORE") if args[0] else None
    return before, unpack(args[1], "AFTER"), timeout


def encode_result(result: SimulateResult) -> bytes:
    return pack(msgspec.json.encode(result))


def decode_result(data: bytes) -> SimulateResult:
    try:
        return msgspec.json.decode(unpack(data, "the answer"), type=SimulateResult)
    except msgspec.DecodeError as exc:
        raise ParseError(f"the agent's simulate answer: {exc}", source="simulate") from None
