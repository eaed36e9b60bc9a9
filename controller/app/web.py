"""The web view's data: every VM with its findings, one VM in detail (where it runs and why,
its storage, its history), served from the controller's held state -- never a crm_mon per
request. The JSON of `/api/vms` is encoded once per pass and shared by every reader (5,000 VMs
stay in the milliseconds); `/api/events` (server-sent events) tells open pages that a pass
changed something, within a second of the controller seeing it.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from controller.app.console import ConsoleBroker
from controller.app.edits import Edit, EditError, Sources, confirm, review
from controller.app.reviews import Reviewed, Reviews
from controller.engine.capacity import NodeLoss
from controller.engine.desired_store import invalid_finding
from controller.engine.history import History
from controller.engine.ledger import Ledger
from controller.engine.loop import Controller
from controller.model.actions import owned
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.observed import Domain, ObservedState, domain_active
from controller.model.overview import VmRow
from controller.model.pcmk import fencing_enabled
from controller.model.stack import StackDoc, stack
from controller.model.upgrade import UpgradeProgress
from controller.model.upgrade import progress as upgrade_progress
from probes.pacemaker.simulate import allocation_scores
from reconcilers.storage import vm_dependencies

PCSD_PORT = 2224
# Counted apart in the header: running + failed + paused + stopped = every VM, none twice.
NOT_RUNNING = frozenset({"failed", "blocked", "paused"})


class NodeItem(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: str  # the worst first: unclean | offline | maintenance | standby | online
    online: bool
    unclean: bool
    standby: bool
    maintenance: bool
    pcsd: str  # the cluster's own web console on that node
    desired_state: str | None = None  # what the file declares for it (a drain: standby)
    # capacity: what its running guests take (libvirt's <vcpu>, <currentMemory>) of the host
    vcpus: int = 0
    memory_kib: int = 0
    host_cpus: int | None = None  # None: its libvirtd has not said
    # the CPU cores its guests used over the last listing span (libvirt's CPU time: what
    # capacity.rebalance evens out); None until every guest there has two listings
    cpu_used: float | None = None
    host_memory_kib: int | None = None
    # a drain declared in the file: the VMs still on it (0 when drained)
    draining: bool = False
    left: tuple[str, ...] = ()
    # N+1 (the file's capacity:; engine/capacity.py): if this node failed, would every VM
    # have room? None: not known (no capacity section, or not computed yet)
    failover_fits: bool | None = None
    failover_stopped: tuple[str, ...] = ()  # the VMs that would have none
    # what runs there (a rolling upgrade shows here node by node): its OS release, libvirt and
    # QEMU (its agent), its Pacemaker's feature set (crm_mon); "" when not known
    release: str = ""
    libvirt: str = ""
    qemu: str = ""
    feature_set: str = ""


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The header: the cluster at a glance."""

    quorum: bool
    fencing: bool  # stonith-enabled (Pacemaker's default: true)
    vms: int
    running: int
    failed: int
    paused: int
    stopped: int
    drifting: int  # objects not as the file wants them (engine/pipeline.drift): VMs, nodes...
    drift: tuple[str, ...] = ()  # which
    findings: Mapping[str, int]  # severity -> open findings of the last pass
    desired_valid: bool
    desired_since: float | None  # the file in force since (valid), or rejected since
    desired_path: str | None
    last_pass_at: float | None
    last_pass_seconds: float | None
    last_pass_error: str | None


class VmsDoc(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    at: float
    vms: tuple[VmRow, ...]
    nodes: tuple[NodeItem, ...]
    console: bool  # whether the console is available (it needs a web configuration)
    console_reason: str = ""  # why it is not
    banner: tuple[str, ...] = ()  # what every page shows on top: an invalid file, failed passes
    summary: Summary | None = None
    stack: StackDoc | None = None  # the storage chain, fencing, non-VM failures
    upgrade: UpgradeProgress | None = None  # the declared rolling upgrade, node by node


class ConstraintItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str  # location | colocation | order
    text: str
    owned: bool  # created by kvm-warden (warden-*)


@dataclass
class WebView:
    controller: Controller
    history: History | None = None
    console: bool = False
    console_reason: str = ""  # why there is no console, in words the page shows
    broker: ConsoleBroker | None = None  # the console relay (app/console.py), when agents exist
    _version: int = 0
    _vms: bytes = b""
    _vms_version: int = -1
    _items: dict[str, VmRow] = field(default_factory=dict)  # of the cached document
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], float] = time.time
    listeners: list[Callable[[], None]] = field(default_factory=list)  # the HTTP port's streams
    _scores: tuple[str, dict[str, dict[str, str]]] = ("", {})  # CIB digest -> scores
    _scores_lock: threading.Lock = field(default_factory=threading.Lock)
    _edit_lock: threading.Lock = field(default_factory=threading.Lock)
    reviews: Reviews = field(default_factory=Reviews)

    # -- change notification -----------------------------------------------------------------
    def passed(self) -> None:
        """After every pass (the loop's on_pass): open pages re-read."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()
        for tell in self.listeners:
            tell()

    @property
    def version(self) -> int:
        return self._version

    def wait(self, seen: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version

    # -- /api/vms -------------------------------------------------------------------------------
    def vms_json(self) -> bytes:
        return self._cached()[0]

    def _cached(self) -> tuple[bytes, dict[str, VmRow]]:
        with self._lock:
            if self._vms_version != self._version or not self._vms:
                version = self._version
                doc = self._doc(version)
                self._vms = msgspec.json.encode(doc)
                self._items = {v.vm: v for v in doc.vms}
                self._vms_version = version
            return self._vms, self._items

    def _doc(self, version: int) -> VmsDoc:
        c = self.controller
        observed = c.last_observed or ObservedState()
        vms = c.last_rows  # the pass's rows carry their findings (model/overview.py)
        desired = c.desired.current
        return VmsDoc(version=version, at=self.clock(), vms=vms,
                      nodes=node_items(observed, desired, vms, self._failover(desired)),
                      console=self.console,
                      console_reason=self.console_reason,
                      banner=self.banner(), summary=self.summary(observed, vms),
                      stack=stack(observed.status, desired),
                      upgrade=upgrade_progress(desired, c.view.index)
                      if desired is not None and c.view.index is not None else None)

    def _failover(self, desired: DesiredState | None) -> dict[str, NodeLoss]:
        """The latest N+1 verdict per node, when the file asks for sizes (without them
        Pacemaker ignores memory and every VM "fits")."""
        checker = self.controller.failover
        if checker is None or desired is None or desired.capacity is None:
            return {}
        return {loss.node: loss for loss in checker.latest if loss.error is None}

    def summary(self, observed: ObservedState, vms: tuple[VmRow, ...]) -> Summary:
        c, last = self.controller, self.controller.last
        health = Counter(v.health for v in vms)
        severities = Counter(f.severity for f in (last.findings if last is not None else ()))
        valid = not c.desired.errors and c.desired.current is not None
        return Summary(
            quorum=observed.status.with_quorum,
            fencing=fencing_enabled(observed.status.properties),
            vms=len(vms), running=sum(1 for v in vms if v.nodes and v.health not in NOT_RUNNING),
            failed=health["failed"] + health["blocked"], paused=health["paused"],
            stopped=sum(1 for v in vms if not v.nodes and v.health not in NOT_RUNNING),
            drifting=len(c.drift), drift=tuple(sorted(i.subject for i in c.drift)),
            findings={k: severities.get(k, 0) for k in ("critical", "warning", "info")},
            desired_valid=valid,
            desired_since=c.desired.loaded_at if valid else c.desired.rejected_at,
            desired_path=c.desired.path,
            last_pass_at=last.finished_at if last is not None else None,
            last_pass_seconds=round(last.duration, 3) if last is not None else None,
            last_pass_error=last.error if last is not None else None)

    def banner(self) -> tuple[str, ...]:
        """The desired file rejected, or the last pass failed: said on every page until fixed."""
        c = self.controller
        out = []
        loud = invalid_finding(c.desired)
        if loud is not None:
            out.append(loud.message)
        last = c.last
        if last is not None and last.error:
            out.append(f"the last pass failed: {last.error}")
        return tuple(out)

    # -- /api/vms/<name> ------------------------------------------------------------------------
    def knows(self, name: str) -> bool:
        return name in self._cached()[1]

    def vm_detail(self, name: str) -> dict[str, Any] | None:
        item = self._cached()[1].get(name)
        if item is None:
            return None
        observed = self.controller.last_observed or ObservedState()
        storage = self._storage(name, item.resource)
        history = [msgspec.to_builtins(e) for e in self.history.query(name, limit=200)] \
            if self.history is not None else []
        return {"vm": msgspec.to_builtins(item), "constraints": [
            msgspec.to_builtins(c) for c in constraints_of(observed, item.resource)],
            "storage": storage, "history": history, "console": self.console,
            "nodes": sorted(observed.status.nodes),  # where its actions may move it
            "console_reason": self.console_reason,
            "banner": list(self.banner())}

    def _storage(self, name: str, rid: str) -> list[dict[str, Any]]:
        """The VM's storage as the storage reconciler derives it (declared, its domain XML or
        a disk under a mountpoint), with why: the facts its order and colocation rest on."""
        index, desired = self.controller.view.index, self.controller.desired.current
        if index is None or desired is None:
            return []
        by_name = desired.storage_by_name()
        deps = vm_dependencies(index, desired, frozenset({name})).get(rid, [])
        return [{"name": st.name, "resource": st.resource, "mountpoint": st.mountpoint,
                 "requires": list(st.requires), "why": why}
                for sname, why in deps if (st := by_name.get(sname)) is not None]

    # -- /api/edits: the page's actions, as reviewed edits of the desired file ------------------
    def edit_sources(self) -> Sources:
        c = self.controller
        if c.desired.path is None:
            raise EditError("the controller has no desired file to edit")
        return Sources(
            path=c.desired.path, observed=lambda: c.last_observed or ObservedState(),
            current_cib=c.current_cib,
            ledger=lambda: c.ledger_file.load(set_aside=False) if c.ledger_file is not None
            else Ledger(),
            audit=c.audit, after_write=c.wake, simulator=c.simulator)

    def review(self, e: Edit, user: str) -> dict[str, Any]:
        """The review, kept under its id (app/reviews.py) when it can be confirmed."""
        with self._busy("a review"):
            doc = review(self.edit_sources(), e)
        if doc.get("valid") and doc.get("changed"):
            version = doc["cib_version"]
            doc["review_id"] = self.reviews.keep(Reviewed(
                user=user, edit=msgspec.convert(doc["edit"], Edit),
                file_sha256=doc["file_sha256"],
                cib_version=(int(version[0]), int(version[1])) if version else None,
                at=self.clock()))
        return doc

    def confirm(self, review_id: str, user: str) -> dict[str, Any]:
        """Write what that review showed, nothing else (Stale: review again)."""
        item = self.reviews.take(review_id, user, self.clock())
        with self._busy("a change"):
            return confirm(self.edit_sources(), item.edit, item.file_sha256, item.cib_version,
                           user)

    @contextmanager
    def _busy(self, what: str) -> Iterator[None]:
        # One at a time (each runs the scheduler), nobody waits: the port's threads stay free.
        if not self._edit_lock.acquire(blocking=False):
            raise Busy(f"{what} is being computed for someone else: try again in a moment")
        try:
            yield
        finally:
            self._edit_lock.release()

    # -- /api/vms/<name>/scores -----------------------------------------------------------------
    def scores(self, name: str) -> dict[str, Any] | None:
        """Pacemaker's allocation scores of the VM per node, on the CIB as it is now (one
        crm_simulate per CIB, shared by every reader; one at a time)."""
        item = self._cached()[1].get(name)
        if item is None:
            return None
        # One computation at a time, and nobody waits for it: a second reader is told to come
        # back (each waiting reader would hold a thread of the HTTP port's executor).
        if not self._scores_lock.acquire(blocking=False):
            raise WardenError("the scores are being computed: try again in a moment")
        try:
            cib = self.controller.current_cib()
            digest = hashlib.sha256(cib).hexdigest()
            if self._scores[0] != digest:
                with tempfile.TemporaryDirectory(prefix="kvm-warden-scores-") as tmp:
                    path = Path(tmp, "cib.xml")
                    path.write_bytes(cib)
                    self._scores = (digest, allocation_scores(str(path)))
            table = self._scores[1].get(item.resource, {})
        finally:
            self._scores_lock.release()
        return {"vm": name, "resource": item.resource, "scores": dict(sorted(table.items()))}

    def history_json(self, vm: str | None, since: float | None, limit: int,
                     before: float | None = None) -> bytes:
        """One page; `next_before` asks for the page before it (None: no more)."""
        events = self.history.query(vm, since, limit, before) if self.history is not None \
            else []
        more = len(events) == limit
        return msgspec.json.encode({"events": events,
                                    "next_before": events[0].at if more and events else None})


def node_state(online: bool, unclean: bool, standby: bool, maintenance: bool) -> str:
    return ("unclean" if unclean else "offline" if not online else
            "maintenance" if maintenance else "standby" if standby else "online")


def cpu_used(guests: list[Domain]) -> float | None:
    """The cores a node's guests used (their sum), or None while one's is not known."""
    cores = [d.cpu_cores for d in guests]
    return None if any(c is None for c in cores) else round(sum(c or 0.0 for c in cores), 2)


def node_items(observed: ObservedState, desired: DesiredState | None,
               vms: tuple[VmRow, ...], failover: Mapping[str, NodeLoss] | None = None
               ) -> tuple[NodeItem, ...]:
    """Every node as its card shows it: its state, what the file wants of it, what its guests
    take of the host, and the VMs a declared drain still has to move."""
    wants = desired.cluster.node_states() if desired is not None else {}
    on: dict[str, list[str]] = {}
    for v in vms:
        for where in v.nodes:
            on.setdefault(where, []).append(v.vm)
    out = []
    for n in sorted(observed.status.nodes.values(), key=lambda n: n.name):
        guests = [d for d in observed.domains.get(n.name, {}).values() if domain_active(d)]
        host = observed.hosts.get(n.name)
        want = wants.get(n.name)
        draining = want == "standby"  # maintenance leaves its guests where they are
        out.append(NodeItem(
            name=n.name, state=node_state(n.online, n.unclean, n.standby, n.maintenance),
            online=n.online, unclean=n.unclean, standby=n.standby, maintenance=n.maintenance,
            pcsd=f"https://{n.name}:{PCSD_PORT}/", desired_state=want,
            vcpus=sum(d.vcpus or 0 for d in guests),
            memory_kib=sum(d.memory_kib or 0 for d in guests),
            host_cpus=host.cpus if host is not None else None,
            cpu_used=cpu_used(guests),
            host_memory_kib=host.memory_kib if host is not None else None,
            draining=draining,
            left=tuple(sorted(on.get(n.name, ()))) if draining else (),
            failover_fits=loss.fits if (loss := (failover or {}).get(n.name)) else None,
            failover_stopped=loss.stopped if loss else (),
            release=host.os if host is not None else "",
            libvirt=host.libvirt_version if host is not None else "",
            qemu=host.qemu_version if host is not None else "",
            feature_set=n.feature_set or ""))
    return tuple(out)


class Busy(WardenError):
    """Another review or change is being computed."""


def constraints_of(observed: ObservedState, rid: str) -> list[ConstraintItem]:
    """The constraints that place a resource or tie it to others, whoever made them."""
    cib = observed.cib
    if cib is None:
        return []
    out: list[ConstraintItem] = []
    for loc in cib.constraints.location:
        members = {loc.rsc} | {r for s in loc.sets for r in s.resources}
        if rid in members:
            where = f"on {loc.node} score {loc.score}" if loc.node else (
                "by rule (" + "; ".join(
                    " and ".join(f"{e.attribute} {e.operation} {e.value or ''}".strip()
                                 for e in rule.expressions) + f" score {rule.score}"
                    for rule in loc.rules) + ")")
            out.append(ConstraintItem(id=loc.id, type="location", text=f"{rid} {where}",
                                      owned=owned(loc.id)))
    for col in cib.constraints.colocation:
        if rid in (col.rsc, col.with_rsc):
            out.append(ConstraintItem(id=col.id, type="colocation",
                                      text=f"{col.rsc} with {col.with_rsc} score {col.score}",
                                      owned=owned(col.id)))
    for o in cib.constraints.order:
        if rid in (o.first, o.then):
            out.append(ConstraintItem(id=o.id, type="order",
                                      text=f"{o.first} then {o.then} ({o.kind or 'Mandatory'})",
                                      owned=owned(o.id)))
    return out
