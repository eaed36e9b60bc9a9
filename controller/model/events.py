"""Observations as events: the payload types, every kind declared once (OBSERVATIONS), and the
envelope `{v, source, seq, sent_at, kind, payload}` they travel in on the bus
(controller/bus/wire.py encodes it as msgpack).

Payloads are small frozen structs, one per kind. Every observation enters the state store as a
payload -- from the bus, from an alert, or from the controller's own reading of Pacemaker
(`PacemakerSeen`, which never travels on the bus).

Each kind's declaration (a `Kind`, below the payloads): its payload type, the topic it travels
under, whether an agent's snapshot keeps its last value, how it folds into the ObservedState
and which source's freshness it proves. The wire's accepted kinds and topics, the publisher's
subscription topics and snapshot cache, the store's fold and the
`kvm_warden_probe_last_success_seconds` series all read `OBSERVATIONS`. A kind left out of the
snapshot never reaches a controller that connects after the agent published it (an HA
takeover): that is why the flag is declared here and nowhere else.
Adding a probe: its module under probes/, its payload, its place in the `Payload` union (which
msgspec decodes by) and its `Kind` here, its wiring in controller/bus/agent.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    ConfigFile,
    Domain,
    HostInfo,
    ObservedState,
    Probe,
    Quorum,
    SourceKey,
)
from controller.model.pcmk import SHARED_FS_TYPES

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
# (OBSERVATIONS, below) marks `snapshotted`. A static union because msgspec decodes by type;
# tests/integration/test_late_joiner.py holds it equal to the registry.
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


# -- every kind, declared once --------------------------------------------------------------

P = TypeVar("P")
Folded = tuple[ObservedState, frozenset[Dirty]]


@dataclass(frozen=True)
class Kind(Generic[P]):
    """One kind of observation. `topic`: the wire topic's prefix (`<topic>.<node>`; `pacemaker`
    is cluster-wide), None for a reading that never travels (the controller's own)."""

    payload: type[P]
    topic: str | None
    snapshotted: bool
    fold: Callable[[ObservedState, P, float], Folded]
    source: Callable[[P, str], SourceKey | None]

    @property
    def name(self) -> str:
        return self.payload.__name__


# -- folds: pure, (state, payload, time) -> (state, what changed) ------------------------------
def _since(old: Domain | None, new: Domain, at: float) -> Domain:
    """`new` with the time its state began: kept from `old` while state and reason hold."""
    if old is not None and old.state == new.state and old.reason == new.reason \
            and old.since is not None:
        since = old.since
    else:
        since = at
    return new if new.since == since else msgspec.structs.replace(new, since=since)


def _load(old: Domain | None, new: Domain) -> Domain:
    """`new` with the CPU cores it used since `old` (the sample before, same node): only when
    both ran, the sample is newer and libvirt's counter went forward (a guest restarted
    starts from zero). The same sample again (a snapshot replayed) keeps what was known."""
    if old is not None and old.cpu_at is not None and old.cpu_at == new.cpu_at:
        return msgspec.structs.replace(new, cpu_cores=old.cpu_cores)
    if (old is None or old.cpu_time_ns is None or new.cpu_time_ns is None
            or old.cpu_at is None or new.cpu_at is None or new.cpu_at <= old.cpu_at
            or old.state != "running" or new.state != "running"
            or new.cpu_time_ns < old.cpu_time_ns):
        return new
    cores = (new.cpu_time_ns - old.cpu_time_ns) / 1e9 / (new.cpu_at - old.cpu_at)
    return msgspec.structs.replace(new, cpu_cores=round(cores, 4))


def _without_load(d: Domain | None) -> Domain | None:
    return None if d is None else msgspec.structs.replace(d, cpu_time_ns=None, cpu_at=None,
                                                            cpu_cores=None)


def _fold_listing(state: ObservedState, p: DomainSeen, at: float) -> Folded:
    doms = {**state.domains}
    old = doms.get(p.node, {})
    if p.connected:
        doms[p.node] = {d.name: _load(old.get(d.name), _since(old.get(d.name), d, at))
                        for d in p.domains}
    else:
        doms.pop(p.node, None)  # unknown, not "gone": planners never act on absence
    new = doms.get(p.node, {})
    # A guest's load changes with every listing; only what planners act on makes it dirty.
    changed = {n for n in set(old) | set(new)
               if _without_load(old.get(n)) != _without_load(new.get(n))}
    hosts = state.hosts if p.host is None or state.hosts.get(p.node) == p.host \
        else {**state.hosts, p.node: p.host}
    return (msgspec.structs.replace(state, domains=doms, hosts=hosts),
            frozenset(Dirty("domain", n) for n in changed))


def _fold_lifecycle(state: ObservedState, p: DomainLifecycle, at: float) -> Folded:
    if not p.state:  # an event without the state after it: only worth a look
        return state, frozenset({Dirty("domain", p.domain)})
    doms = {**state.domains}
    node_doms = dict(doms.get(p.node, {}))
    cur = node_doms.get(p.domain, Domain(name=p.domain))
    node_doms[p.domain] = _since(cur, msgspec.structs.replace(cur, state=p.state,
                                                              reason=p.reason), at)
    doms[p.node] = node_doms
    return msgspec.structs.replace(state, domains=doms), frozenset({Dirty("domain", p.domain)})


def _fold_quorum(state: ObservedState, p: QuorumChanged, at: float) -> Folded:
    q = Quorum(state=p.state, quorate=p.quorate, members=p.members,
               expected_votes=p.expected_votes, total_votes=p.total_votes)
    return (msgspec.structs.replace(state, quorum={**state.quorum, p.node: q}),
            frozenset({Dirty("quorum", p.node)}))


def _fold_mounts(state: ObservedState, p: MountsSeen, at: float) -> Folded:
    mps = tuple(sorted(m.mountpoint for m in p.mounts if m.fstype in SHARED_FS_TYPES))
    return (msgspec.structs.replace(state, mounts={**state.mounts, p.node: mps}),
            frozenset({Dirty("mounts", p.node)}))


def _fold_configs(state: ObservedState, p: ConfigFilesSeen, at: float) -> Folded:
    new = {f.path: f for f in p.files}
    old = state.config_files.get(p.node, {})
    changed = {path for path in set(new) | set(old) if new.get(path) != old.get(path)}
    if state.config_dirs.get(p.node) != p.dirs:
        changed |= set(new) | set(old) | {""}  # what this node can vouch for changed
    return (msgspec.structs.replace(state, config_files={**state.config_files, p.node: new},
                                    config_dirs={**state.config_dirs, p.node: p.dirs}),
            frozenset(Dirty("config", path) for path in changed))


def _fold_pacemaker(state: ObservedState, p: PacemakerSeen, at: float) -> Folded:
    return msgspec.structs.replace(state, status=p.status, cib=p.cib), frozenset()


def _fold_alert(state: ObservedState, p: AlertReceived, at: float) -> Folded:
    return state, frozenset({Dirty("alert", p.resource or p.node or "")})


def _unchanged(state: ObservedState, p: object, at: float) -> Folded:
    return state, frozenset()


def _per_node(probe: Probe) -> Callable[[Any, str], SourceKey]:
    return lambda p, source: SourceKey(probe, p.node)


def _lifecycle_source(p: DomainLifecycle, source: str) -> SourceKey | None:
    return SourceKey("libvirt", p.node) if p.state else None


DOMAINS = Kind(DomainSeen, "libvirt", True, _fold_listing, _per_node("libvirt"))
LIFECYCLE = Kind(DomainLifecycle, "libvirt", False, _fold_lifecycle, _lifecycle_source)
QUORUM = Kind(QuorumChanged, "corosync", True, _fold_quorum, _per_node("corosync"))
MOUNTS = Kind(MountsSeen, "storage", True, _fold_mounts, _per_node("storage"))
CONFIG_FILES = Kind(ConfigFilesSeen, "config", True, _fold_configs, _per_node("config"))
HEARTBEAT = Kind(Heartbeat, "heartbeat", False, _unchanged,
                 lambda p, source: SourceKey("agent", source))
ALERT = Kind(AlertReceived, "pacemaker", False, _fold_alert, lambda p, source: None)
PACEMAKER = Kind(PacemakerSeen, None, False, _fold_pacemaker,
                 lambda p, source: SourceKey("pacemaker"))

OBSERVATIONS: tuple[Kind[Any], ...] = (DOMAINS, LIFECYCLE, QUORUM, MOUNTS, CONFIG_FILES,
                                       HEARTBEAT, ALERT, PACEMAKER)
KIND_OF: dict[type[Any], Kind[Any]] = {k.payload: k for k in OBSERVATIONS}
SNAPSHOT_TOPIC = "snapshot"
# What the wire accepts, by name: every kind that travels, and the snapshot that carries them.
WIRE_KINDS: dict[str, type[Any]] = {
    **{k.name: k.payload for k in OBSERVATIONS if k.topic is not None}, "Snapshot": Snapshot}


def topic(payload: object, node: str) -> bytes:
    """The wire topic of a payload published by `node` (`pacemaker`: cluster-wide alerts)."""
    kind = KIND_OF.get(type(payload))
    prefix = SNAPSHOT_TOPIC if isinstance(payload, Snapshot) else (
        kind.topic if kind is not None and kind.topic else "other")
    return b"pacemaker" if prefix == "pacemaker" else f"{prefix}.{node}".encode()


def topics(node: str) -> frozenset[bytes]:
    """Every topic an agent on `node` publishes: what a subscriber may subscribe to."""
    out = {b"pacemaker" if k.topic == "pacemaker" else f"{k.topic}.{node}".encode()
           for k in OBSERVATIONS if k.topic is not None}
    return frozenset(out | {f"{SNAPSHOT_TOPIC}.{node}".encode()})


def fold(state: ObservedState, p: Observation, source: str, at: float) -> Folded:
    """Fold one observation from `source`: a snapshot folds each payload it carries; every
    payload stamps its source's freshness, and anything an agent sends says it is alive."""
    if isinstance(p, Snapshot):
        dirty: set[Dirty] = set()
        for inner in p.payloads:
            state, ch = fold(state, inner, source, at)
            dirty |= ch
        return msgspec.structs.replace(state, stale=state.stale - {source}), frozenset(dirty)
    kind = KIND_OF[type(p)]
    state, changed = kind.fold(state, p, at)
    key = kind.source(p, source)
    updates: dict[str, Any] = {}
    if key is not None:
        updates["observed_at"] = {**state.observed_at, key: at}
    if kind not in (PACEMAKER, ALERT) and source in state.stale:
        updates["stale"] = state.stale - {source}
    return (msgspec.structs.replace(state, **updates) if updates else state), changed
