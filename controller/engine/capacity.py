"""N+1, proven by Pacemaker's own scheduler on the cluster as it is: for each node, what the
scheduler does if that node fails (`crm_simulate --node-fail`); with `capacity.tolerate: k`
above 1, also for every group of k nodes failing at once (N+k). A VM left stopped has no room
anywhere -- with sizes and capacity in the CIB (reconcilers/capacity.py) that is a real
answer; without them Pacemaker ignores memory and every VM "fits" (Pacemaker Explained,
"Utilization and Placement Strategy")."""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from controller.engine.preview import patched
from controller.logs import logger
from controller.model.actions import AnyAction, Finding, TransitionStep
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.index import ClusterIndex
from controller.model.vms import is_vm_resource
from probes.pacemaker.read import read_status
from probes.pacemaker.simulate import settle, simulate_failures
from probes.xmlparse import parse_document

PLACED = frozenset({"move", "migrate", "recover", "start"})


def failure_groups(nodes: Sequence[str], tolerate: int) -> list[tuple[str, ...]]:
    """The node failures to simulate: each node alone, and with `tolerate` k > 1 every group
    of k nodes at once (at most all but one of the nodes)."""
    nodes = sorted(nodes)
    k = min(tolerate, len(nodes) - 1)
    singles = [(n,) for n in nodes]
    return singles + (list(itertools.combinations(nodes, k)) if k > 1 else [])


def label(group: Sequence[str]) -> str:
    """A group's name on node cards, metrics and findings: "kvm1" or "kvm1+kvm2"."""
    return "+".join(group)


def said(node_label: str) -> str:
    """A group in words: "kvm1" or "kvm1 and kvm2"."""
    return " and ".join(node_label.split("+"))


@dataclass(frozen=True)
class NodeLoss:
    """If `node` failed (a node, or a group "kvm1+kvm2" failing at once): where each VM would
    run, and which would be left stopped."""

    node: str
    vms: tuple[str, ...]  # VM resources running on it (on them) now
    placed: dict[str, str] = field(default_factory=dict)  # resource -> node it would run on
    stopped: tuple[str, ...] = ()  # VMs (there or elsewhere) the scheduler would leave stopped
    error: str | None = None

    @property
    def fits(self) -> bool:
        return self.error is None and not self.stopped


def node_loss(steps: Sequence[TransitionStep], group: Sequence[str], index: ClusterIndex,
              running: Mapping[str, Sequence[str]] | None = None) -> NodeLoss:
    """`running`: where each resource runs (the index's when None: the cluster as it is)."""
    where = index.running if running is None else running
    mine = tuple(sorted(rid for rid, nodes in where.items()
                        if set(group) & set(nodes) and is_vm_resource(index, rid)))
    placed = {s.resource: s.to_node for s in steps
              if s.action in PLACED and s.to_node and is_vm_resource(index, s.resource)}
    stopped = sorted({s.resource for s in steps if s.action == "stop"
                      and is_vm_resource(index, s.resource) and s.resource not in placed}
                     | {rid for rid in mine if rid not in placed})
    return NodeLoss(node=label(group), vms=mine, placed=placed, stopped=tuple(stopped))


class LossCache:
    """Each group's answer by what it depends on (digest(): the CIB without what changes on
    every write -- versions, call ids, timings): a status update that changes nothing the
    scheduler decides by asks nothing again. Any other change asks every group again: under
    a utilization strategy Pacemaker assigns the biggest resources first, so a VM displaced by
    one node's failure can move VMs running on the others (seen: tests/integration/
    test_capacity_cache.py) -- no node's answer is known to be untouched by a change
    elsewhere."""

    def __init__(self, size: int = 512):
        self.size = size
        self._answers: OrderedDict[str, NodeLoss] = OrderedDict()
        self._lock = threading.Lock()
        self.asked = 0  # scheduler runs made (the bench and tests read it)

    def get(self, key: str) -> NodeLoss | None:
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
            return hit

    def put(self, key: str, loss: NodeLoss) -> None:
        with self._lock:
            self._answers[key] = loss
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)


def failover_report(cib: bytes, index: ClusterIndex, tolerate: int = 1,
                    cache: LossCache | None = None) -> list[NodeLoss]:
    """Every online node's loss (and with `tolerate` > 1 every group's), simulated on `cib`
    (configuration and status as they are), one scheduler run each, a core each."""
    online = [n for n, st in index.nodes.items() if st.online]
    root = parse_document(cib, source="the CIB for the failover proof")
    return list(_losses(root, index, index.running, failure_groups(online, tolerate),
                        cache).values())


# Attributes that change on every write or operation but not what the scheduler decides.
VOLATILE = frozenset({"epoch", "num_updates", "cib-last-written", "update-origin",
                      "update-client", "update-user", "call-id", "last-rc-change", "last-run",
                      "exec-time", "queue-time", "transition-key", "transition-magic"})


def digest(root: etree._Element) -> str:
    """What the scheduler's answer depends on, as a key: the CIB without the attributes that
    change with every write or operation (versions, call ids, timings)."""
    h = hashlib.sha256()
    for event, el in etree.iterwalk(root, events=("start", "end")):
        if not isinstance(el.tag, str):
            continue
        if event == "end":
            h.update(b"\2")
            continue
        h.update(el.tag.encode())
        for k, v in sorted(el.attrib.items()):
            if k not in VOLATILE:
                h.update(f"\0{k}={v}".encode())
        h.update(b"\1")
    return h.hexdigest()


def _losses(cib: etree._Element, index: ClusterIndex, running: Mapping[str, Sequence[str]],
            groups: list[tuple[str, ...]], cache: LossCache | None = None
            ) -> dict[str, NodeLoss]:
    key = digest(cib) if cache is not None else ""
    out: dict[str, NodeLoss] = {}
    files: dict[tuple[str, ...], str] = {}
    keys: dict[tuple[str, ...], str] = {}
    with tempfile.TemporaryDirectory(prefix="kvm-warden-failover-") as tmp:
        for g in groups:
            hit = cache.get(key + label(g)) if cache is not None else None
            if hit is not None:
                out[label(g)] = hit
                continue
            if not files:
                etree.ElementTree(cib).write(str(Path(tmp, "cib.xml")))
            files[g], keys[g] = str(Path(tmp, "cib.xml")), key + label(g)
        runs = simulate_failures(files, workers=os.cpu_count() or 2)
    for g, r in runs.items():
        loss = (NodeLoss(node=label(g), vms=(), error=str(r)[:300])
                if isinstance(r, WardenError) else node_loss(r, g, index, running))
        if cache is not None:
            cache.asked += 1
            if loss.error is None:
                cache.put(keys[g], loss)
        out[label(g)] = loss
    return {label(g): out[label(g)] for g in groups}


@dataclass(frozen=True)
class Admission:
    """Would the patch, once Pacemaker has carried it out, leave a VM without room if one
    node failed, where the cluster as it is now has room for it? `broken`: node -> those
    VMs. `error`: the scheduler could not say (not proven: the patch is held)."""

    broken: dict[str, tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None

    @property
    def admitted(self) -> bool:
        return self.error is None and not self.broken

    def words(self) -> str:
        if self.error is not None:
            return f"the failover proof could not run: {self.error}"
        return "; ".join(f"if {said(n)} failed, {', '.join(v)} would have no room"
                         for n, v in sorted(self.broken.items()))


def admission(cib: bytes, patch: Sequence[AnyAction], index: ClusterIndex,
              baseline: Sequence[AnyAction] = (), tolerate: int = 1,
              cache: LossCache | None = None) -> Admission:
    """N+1 after the patch, proven by the scheduler: the patched CIB settled (its transition
    simulated), then each node's failure on it; a VM left stopped there that has room today
    (the cluster as it is, with the `baseline` actions applied) is what the patch breaks. Today
    is simulated only when something fails after."""
    try:
        root = patched(cib, patch)
        with tempfile.TemporaryDirectory(prefix="kvm-warden-admission-") as tmp:
            changed, settled = (str(Path(tmp, n)) for n in ("p.xml", "s.xml"))
            Path(changed).write_bytes(etree.tostring(root))
            settle(changed, settled)
            status = read_status(settled)
            running = {r.id: list(r.nodes) for r in status.resources if r.active}
            nodes = [n for n, st in status.nodes.items() if st.online]
            groups = failure_groups(nodes, tolerate)
            settled_root = parse_document(Path(settled).read_bytes(), source=settled)
            after = _losses(settled_root, index, running, groups, cache)
            if all(loss.fits for loss in after.values()):
                return Admission()
            before = _losses(patched(cib, baseline), index, index.running, groups, cache)
    except (WardenError, OSError) as exc:
        return Admission(error=str(exc)[:300])
    errors = [loss.error for loss in after.values() if loss.error is not None]
    if errors:
        return Admission(error=errors[0])
    broken = {}
    for n, loss in after.items():
        was = set(before[n].stopped) if n in before and before[n].error is None else set()
        new = tuple(v for v in loss.stopped if v not in was)
        if new:
            broken[n] = new
    return Admission(broken=broken)


class FailoverChecker:
    """N+1 beside the loop, like the preview: computed on its own thread whenever the CIB's
    configuration or the VMs' placement changed; the loop reads the latest verdict (findings,
    metrics) and never waits for it."""

    def __init__(self, current_cib: Callable[[], bytes]):
        self.current_cib = current_cib
        self._lock = threading.Lock()
        self._key: object = None
        self.tolerate = 1
        self._running = False
        self.latest: tuple[NodeLoss, ...] = ()
        self.cache = LossCache()
        self.log = logger(component="capacity")

    def offer(self, index: ClusterIndex, tolerate: int = 1) -> None:
        cib = index.observed.cib
        key = (cib.version if cib is not None else None, tolerate,
               tuple(sorted((r, n) for r, n in index.running.items() if is_vm_resource(index, r))))
        with self._lock:
            if self._running or key == self._key:
                return
            self._key, self._running = key, True
        threading.Thread(target=self._work, args=(index, tolerate), name="failover",
                         daemon=True).start()

    def _work(self, index: ClusterIndex, tolerate: int) -> None:
        try:
            report = tuple(failover_report(self.current_cib(), index, tolerate, self.cache))
        except Exception as exc:  # noqa: BLE001 -- a crash is "not known", never a dead loop
            self.log.error("failover_check_crashed", error=repr(exc))
            report = ()
        with self._lock:
            self.latest, self._running = report, False

    def findings(self, desired: DesiredState) -> tuple[Finding, ...]:
        """With sizes in the CIB (the file's capacity:), each node whose loss leaves VMs
        without room."""
        if desired.capacity is None:
            return ()
        return tuple(
            Finding(reconciler="capacity", kind="failover-no-room", severity="warning",
                    subject=r.node, node=r.node,
                    message=(f"if {said(r.node)} {'fail' if '+' in r.node else 'fails'}, "
                             f"{', '.join(r.stopped)} would have no room and stay stopped "
                             "(Pacemaker's scheduler: crm_simulate "
                             + " ".join(f"--node-fail {n}" for n in r.node.split("+"))
                             + "); add capacity or move load before it happens"))
            for r in self.latest if r.error is None and r.stopped)
