"""The state store: `fold(state, envelope) -> (state, changed)`, pure.

Every event makes a new ObservedState (frozen, so readers never see half an update) and names
the objects it changed, which the loop turns into its dirty set. Freshness is kept per source
(`observed_at["libvirt:kvm1"]`, ...), and a publisher that went silent is listed in `stale`:
its data is kept but not trusted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import msgspec

from controller.model.events import (
    AlertReceived,
    ConfigFilesSeen,
    Dirty,
    DomainLifecycle,
    DomainSeen,
    Envelope,
    Heartbeat,
    MountsSeen,
    Observation,
    PacemakerSeen,
    QuorumChanged,
    Snapshot,
)
from controller.model.observed import Domain, ObservedState, Quorum
from controller.model.pcmk import SHARED_FS_TYPES


def fold(state: ObservedState, env: Envelope) -> tuple[ObservedState, frozenset[Dirty]]:
    return _apply(state, env.payload, env.source, env.sent_at)


def _apply(state: ObservedState, p: Observation, source: str, at: float
           ) -> tuple[ObservedState, frozenset[Dirty]]:
    seen = {**state.observed_at}
    stale = state.stale - {source}
    match p:
        case Snapshot(payloads=payloads):
            changed: set[Dirty] = set()
            for inner in payloads:
                state, ch = _apply(state, inner, source, at)
                changed |= ch
            return msgspec.structs.replace(state, stale=stale), frozenset(changed)
        case DomainSeen(node=node, connected=connected, domains=domains):
            seen[f"libvirt:{node}"] = at
            doms = {**state.domains}
            old = doms.get(node, {})
            if connected:
                doms[node] = {d.name: _since(old.get(d.name), d, at) for d in domains}
            else:
                doms.pop(node, None)  # unknown, not "gone": planners never act on absence
            names = set(old) | set(doms.get(node, {}))
            changed_names = {n for n in names if old.get(n) != doms.get(node, {}).get(n)}
            hosts = state.hosts if p.host is None or state.hosts.get(node) == p.host \
                else {**state.hosts, node: p.host}
            return (msgspec.structs.replace(state, domains=doms, hosts=hosts, observed_at=seen,
                                            stale=stale),
                    frozenset(Dirty("domain", n) for n in changed_names))
        case DomainLifecycle(node=node, domain=name, state=new_state) if new_state:
            seen[f"libvirt:{node}"] = at
            doms = {**state.domains}
            node_doms = dict(doms.get(node, {}))
            cur = node_doms.get(name, Domain(name=name))
            node_doms[name] = _since(cur, msgspec.structs.replace(
                cur, state=new_state, reason=p.reason), at)
            doms[node] = node_doms
            return (msgspec.structs.replace(state, domains=doms, observed_at=seen, stale=stale),
                    frozenset({Dirty("domain", name)}))
        case DomainLifecycle(domain=name):
            return msgspec.structs.replace(state, stale=stale), frozenset({Dirty("domain", name)})
        case QuorumChanged(node=node):
            seen[f"corosync:{node}"] = at
            q = Quorum(state=p.state, quorate=p.quorate, members=p.members,
                       expected_votes=p.expected_votes, total_votes=p.total_votes)
            quorum = {**state.quorum, node: q}
            return (msgspec.structs.replace(state, quorum=quorum, observed_at=seen, stale=stale),
                    frozenset({Dirty("quorum", node)}))
        case MountsSeen(node=node, mounts=mounts):
            seen[f"storage:{node}"] = at
            mps = tuple(sorted(m.mountpoint for m in mounts if m.fstype in SHARED_FS_TYPES))
            return (msgspec.structs.replace(state, mounts={**state.mounts, node: mps},
                                            observed_at=seen, stale=stale),
                    frozenset({Dirty("mounts", node)}))
        case ConfigFilesSeen(node=node, files=files):
            seen[f"config:{node}"] = at
            new = {f.path: f for f in files}
            old_files = state.config_files.get(node, {})
            changed_paths = {p for p in set(new) | set(old_files) if new.get(p) != old_files.get(p)}
            return (msgspec.structs.replace(state, config_files={**state.config_files, node: new},
                                            observed_at=seen, stale=stale),
                    frozenset(Dirty("config", p) for p in changed_paths))
        case PacemakerSeen(status=status, cib=cib):
            seen["pacemaker"] = at
            return (msgspec.structs.replace(state, status=status, cib=cib, observed_at=seen),
                    frozenset())
        case Heartbeat():
            seen[f"agent:{source}"] = at
            return msgspec.structs.replace(state, observed_at=seen, stale=stale), frozenset()
        case AlertReceived(resource=rsc, node=node):
            return state, frozenset({Dirty("alert", rsc or node or "")})
    return state, frozenset()


def _since(old: Domain | None, new: Domain, at: float) -> Domain:
    """`new` with the time its state began: kept from `old` while state and reason hold."""
    if old is not None and old.state == new.state and old.reason == new.reason \
            and old.since is not None:
        since = old.since
    else:
        since = at
    return new if new.since == since else msgspec.structs.replace(new, since=since)


def mark_stale(state: ObservedState, source: str) -> ObservedState:
    return msgspec.structs.replace(state, stale=state.stale | {source})


class Store:
    """The current ObservedState behind a lock; listeners hear which objects changed."""

    def __init__(self, initial: ObservedState | None = None):
        self._state = initial or ObservedState()
        self._lock = threading.Lock()
        self.listeners: list[Callable[[frozenset[Dirty]], None]] = []
        # Hear every envelope itself (the out-of-band watcher needs the event, not its effect).
        self.taps: list[Callable[[Envelope], None]] = []

    @property
    def state(self) -> ObservedState:
        return self._state

    def fold(self, env: Envelope) -> frozenset[Dirty]:
        with self._lock:
            self._state, changed = fold(self._state, env)
        for tap in self.taps:
            tap(env)
        if changed:
            for listener in self.listeners:
                listener(changed)
        return changed

    def observe(self, observations: Iterable[Observation], source: str, at: float) -> None:
        """Fold the controller's own readings (Pacemaker, a local libvirt, a simulated cluster).

        Listeners are not told: the pass that took the reading is the one that plans on it."""
        with self._lock:
            for obs in observations:
                self._state, _ = _apply(self._state, obs, source, at)

    def update(self, fn: Callable[[ObservedState], ObservedState]) -> None:
        with self._lock:
            self._state = fn(self._state)
