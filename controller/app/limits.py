"""The HTTP port's bounds (app/http.py enforces them; app/routes.py reads the streams')."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    per_client: int = 64
    request_seconds: float = 10.0  # TLS handshake + request head + body, from accept
    max_body: int = 64 * 1024
    max_streams: int = 64  # open /api/events streams, all users together
    streams_per_user: int = 8
    stream_write_seconds: float = 10.0  # a stream whose reader stopped reading is dropped
    # Descriptors the process keeps for itself (crm_mon, cibadmin, the bus, the ledger): the
    # port never takes more than the soft limit minus this.
    reserve_descriptors: int = 256
