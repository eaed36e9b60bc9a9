"""N+1, proven by Pacemaker's own scheduler on the cluster as it is: for each node, what the
scheduler does if that node fails (`crm_simulate --node-fail`); with `capacity.tolerate: k`
above 1, also for every group of k nodes failing at once (N+k). A VM left stopped has no room
anywhere -- with sizes and capacity in the CIB (reconcilers/capacity.py) that is a real
answer; without them Pacemaker ignores memory and every VM "fits" (Pacemaker Explained,
"Utilization and Placement Strategy")."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
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


def failover_report(cib: bytes, index: ClusterIndex, tolerate: int = 1) -> list[NodeLoss]:
    """Every online node's loss (and with `tolerate` > 1 every group's), simulated on `cib`
    (configuration and status as they are), one scheduler run each, a core each."""
    fd, path = tempfile.mkstemp(prefix="kvm-warden-failover-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cib)
        online = [n for n, st in index.nodes.items() if st.online]
        return list(_losses(path, index, index.running,
                            failure_groups(online, tolerate)).values())
    finally:
        os.unlink(path)


def _losses(cib_path: str, index: ClusterIndex, running: Mapping[str, Sequence[str]],
            groups: list[tuple[str, ...]]) -> dict[str, NodeLoss]:
    runs = simulate_failures(cib_path, groups, workers=os.cpu_count() or 2)
    return {label(g): NodeLoss(node=label(g), vms=(), error=str(r)[:300])
            if isinstance(r, WardenError) else node_loss(r, g, index, running)
            for g, r in runs.items()}


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
              baseline: Sequence[AnyAction] = (), tolerate: int = 1) -> Admission:
    """N+1 after the patch, proven by the scheduler: the patched CIB settled (its transition
    simulated), then each node's failure on it; a VM left stopped there that has room today
    (the cluster as it is, with the `baseline` actions applied) is what the patch breaks. Today
    is simulated only when something fails after."""
    try:
        root = patched(cib, patch)
        with tempfile.TemporaryDirectory(prefix="kvm-warden-admission-") as tmp:
            changed, settled, now = (str(Path(tmp, n)) for n in ("p.xml", "s.xml", "n.xml"))
            Path(changed).write_bytes(etree.tostring(root))
            settle(changed, settled)
            status = read_status(settled)
            running = {r.id: list(r.nodes) for r in status.resources if r.active}
            nodes = [n for n, st in status.nodes.items() if st.online]
            groups = failure_groups(nodes, tolerate)
            after = _losses(settled, index, running, groups)
            if all(loss.fits for loss in after.values()):
                return Admission()
            Path(now).write_bytes(etree.tostring(patched(cib, baseline)))
            before = _losses(now, index, index.running, groups)
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
            report = tuple(failover_report(self.current_cib(), index, tolerate))
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
