"""Observations as events: the payload types, and the envelope `{v, source, seq, sent_at, kind,
payload}` they travel in on the bus (controller/bus/wire.py encodes it as msgpack).

Payloads are small frozen structs, one per kind. Every observation enters the state store as a
payload -- from the bus, from an alert, or from the controller's own reading of Pacemaker
(`PacemakerSeen`, which never travels on the bus). Which kinds exist, their topics, whether an
agent's snapshot keeps them, their folds and freshness keys: controller/model/observations.py.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from controller.model.observed import CibConfig, ClusterStatus, ConfigFile, Domain, HostInfo

VERSION = 1


DirtyKind = Literal["domain", "quorum", "mounts", "alert", "config"]


class Dirty(msgspec.Struct, frozen=True):
    """One object an observation changed: a key of the loop's work queue. Domains give an
    incremental pass over those VMs; quorum, mounts and alerts a full one (crm_mon)."""

    kind: DirtyKind
    name: str


class DomainLifecycle(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A libvirt lifecycle event (virDomainEventType/Detail, named as virsh names them)."""

    node: str
    domain: str
    uuid: str = ""
    event: str  # started | stopped | suspended | resumed | crashed | ...
    detail: str = ""  # e.g. failed, destroyed, migrated, shutdown, ioerror
    state: str = ""  # the domain state after the event, as `virsh domstate`
    reason: str = ""  # the state's reason, as `virsh domstate --reason` (paused: ioerror, ...)


class DomainSeen(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A full listing of one node's domains (periodic, and after every reconnect)."""

    node: str
    connected: bool = True
    domains: tuple[Domain, ...] = ()
    host: HostInfo | None = None  # the node's CPUs and memory, when libvirt gave them


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


class ConfigFilesSeen(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The domain XML files in one node's shared configuration directories (`--config-dir`).

    `dirs` says which directories the agent reads: a path under none of them is one this node
    cannot vouch for (not "absent"); an agent with no directory publishes `dirs=()` once."""

    node: str
    dirs: tuple[str, ...] = ()
    files: tuple[ConfigFile, ...] = ()


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    node: str


# What an agent's snapshot carries: the last payload of each kind the registry
# (controller/model/observations.py) marks `snapshotted`. A static union because msgspec decodes
# by type; tests/unit/test_observations.py holds it equal to the registry.
Snapshotted = DomainSeen | QuorumChanged | MountsSeen | ConfigFilesSeen


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A publisher's whole current state: the last payload of each snapshotted kind."""

    node: str
    payloads: tuple[Snapshotted, ...] = ()


Payload = (
    DomainLifecycle | DomainSeen | QuorumChanged | AlertReceived | MountsSeen | ConfigFilesSeen
    | Heartbeat | Snapshot
)


class PacemakerSeen(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """One reading of Pacemaker: crm_mon's status and the CIB's configuration, taken together."""

    status: ClusterStatus
    cib: CibConfig | None = None


Observation = Payload | PacemakerSeen


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    v: int
    source: str
    seq: int
    sent_at: float
    kind: str
    payload: Payload


def envelope(source: str, seq: int, payload: Payload) -> Envelope:
    return Envelope(v=VERSION, source=source, seq=seq, sent_at=time.time(),
                    kind=type(payload).__name__, payload=payload)
