"""Preview: what Pacemaker's scheduler will do once a patch is applied -- before it is.

The pass's CIB actions are applied to a private copy of the CIB (status included) exactly as
the actuator would edit it; `crm_simulate` then computes the transition for the copy and for
the unpatched CIB, and the difference is what the patch causes (a transition Pacemaker was
running anyway is not the patch's doing). A step that stops, restarts, cold-moves or recovers a
running VM the desired file does not ask to stop is a disruption: the disruption gate refuses
such a patch unless allowed. Live migrations are not disruptions.

Whose scheduler: the DC's decides what the cluster does. While a rolling upgrade leaves the
cluster mixed, this node's Pacemaker may not be the DC's; the preview then runs on a node of the
DC's version through its agent (`Simulator`, chosen each time by `choose_scheduler`), and when no
such agent answers the preview fails: the patch is held, not previewed by another scheduler.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

from controller.actuators.cibedit import CibEditor, EditError
from controller.engine.decide import Decision
from controller.engine.guard import Verdict
from controller.logs import logger
from controller.model.actions import CIB_ACTIONS, AnyAction, TransitionStep, describe
from controller.model.desired import DesiredState
from controller.model.errors import ToolError, WardenError
from controller.model.index import ClusterIndex
from controller.model.machines import lacks, machine_on
from controller.model.observed import ConfigVersion, Node
from controller.model.vms import is_vm_resource
from probes.pacemaker.read import config_version
from probes.pacemaker.simulate import Scheduler, Steps, local_scheduler, run_pair
from probes.xmlparse import parse_document

DISRUPTIVE = frozenset({"stop", "restart", "move", "recover"})


@dataclass(frozen=True)
class Preview:
    steps: tuple[TransitionStep, ...] = ()
    error: str | None = None  # the scheduler could not say (timed out, failed): not proven safe
    seconds: float = 0.0
    # The CIB the scheduler judged (the cluster as it was when the preview started) and its
    # configuration version: the base of the patch, applied only while that version stands.
    cib: bytes | None = None
    config: ConfigVersion | None = None
    simulations: int = 0  # crm_simulate runs this preview cost (1 when the baseline was known)
    scheduler: str = ""  # whose scheduler computed it ("Pacemaker 2.1.5 ... on this node")
    timed_out: bool = False  # the scheduler was killed at the timeout: longer may well do
    timeout: float = 0.0  # the timeout it was given (s)


MAX_TIMEOUT = 3600.0


@dataclass
class Timing:
    """The preview's timeout, sized from what this cluster's scheduler measured: at least the
    file's `preview_timeout_seconds`, three times the last preview that finished, and twice a
    timeout that was not enough -- a large cluster (one transition at 16 x 1,000 takes ~35 s)
    is previewed in full instead of having every move refused at a fixed 30 s."""

    last_seconds: float = 0.0
    after_timeout: float = 0.0

    def timeout(self, configured: float) -> float:
        return min(MAX_TIMEOUT, max(configured, 3 * self.last_seconds, self.after_timeout))

    def record(self, pv: Preview) -> None:
        if pv.timed_out:
            self.after_timeout = min(MAX_TIMEOUT, 2 * pv.timeout)
        elif pv.error is None and pv.simulations:
            self.last_seconds = pv.seconds


class Simulator(Protocol):
    """Runs the scheduler on a CIB pair (`before` None: the baseline is known)."""

    @property
    def where(self) -> str: ...

    def __call__(self, before: bytes | None, after: bytes, timeout: float
                 ) -> tuple[Steps | None, Steps]: ...


@dataclass(frozen=True)
class LocalSimulator:
    """This node's crm_simulate."""

    @property
    def where(self) -> str:
        try:
            return f"{local_scheduler()} on this node"
        except WardenError:
            return "this node's Pacemaker"

    def __call__(self, before: bytes | None, after: bytes, timeout: float
                 ) -> tuple[Steps | None, Steps]:
        return run_pair(before, after, timeout=timeout)


@dataclass(frozen=True)
class NoFaithfulScheduler:
    """No scheduler of the DC's version can be reached: every preview fails, saying why."""

    reason: str

    @property
    def where(self) -> str:
        return "none"

    def __call__(self, before: bytes | None, after: bytes, timeout: float
                 ) -> tuple[Steps | None, Steps]:
        raise WardenError(self.reason)


LOCAL = LocalSimulator()


@dataclass(frozen=True)
class SchedulerChoice:
    node: str | None  # None: this node's own
    reason: str = ""  # set: no faithful scheduler (the preview fails with this)


def choose_scheduler(local: Scheduler, dc: str | None, nodes: Mapping[str, Node],
                     agents: Sequence[str]) -> SchedulerChoice:
    """Where a preview runs so that it is the DC's scheduler: here when this node's feature
    set is the DC's (or the DC's is not known), else on a node of the DC's feature set with an
    agent (the DC first), else nowhere."""
    dc_node = nodes.get(dc) if dc else None
    want = dc_node.feature_set if dc_node is not None else None
    # crm_mon says "<3.15.1" for a node that publishes none (Pacemaker before 2.1, or a CIB
    # file's simulated nodes): not a version to match, so not known
    if want is None or want.startswith("<") or want == local.feature_set:
        return SchedulerChoice(None)
    same = sorted((n.name for n in nodes.values() if n.online and not n.unclean
                   and n.feature_set == want and n.name in agents),
                  key=lambda name: (name != dc, name))
    if same:
        return SchedulerChoice(same[0])
    return SchedulerChoice(None, f"the DC {dc} runs Pacemaker feature set {want}, this node "
                                 f"{local.feature_set}, and no node of the DC's version has an "
                                 "agent to preview on: not previewed by the DC's scheduler")


@dataclass
class Baseline:
    """The transition Pacemaker computes for an unpatched CIB, kept for the CIB it was computed
    on (by digest): a preview of the same reading runs the scheduler once, on the patched copy."""

    digest: bytes = b""
    steps: tuple[TransitionStep, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, digest: bytes) -> tuple[TransitionStep, ...] | None:
        with self._lock:
            return self.steps if digest == self.digest else None

    def put(self, digest: bytes, steps: tuple[TransitionStep, ...]) -> None:
        with self._lock:
            self.digest, self.steps = digest, steps


def patched(cib: bytes, actions: Sequence[AnyAction]) -> etree._Element:
    """The CIB with the patch applied, as the actuator would apply it."""
    root = parse_document(cib, source="the CIB to preview", exact=True)
    editor = CibEditor(root)
    for a in actions:
        try:
            editor.apply(a)
        except EditError:
            continue  # the actuator would report this one as failed: not in the patch
    return root


def preview(cib: bytes, actions: Sequence[AnyAction], timeout: float,
            baseline: Baseline | None = None, simulator: Simulator = LOCAL) -> Preview:
    started = time.monotonic()
    where = simulator.where
    try:
        root = patched(cib, actions)
        config = config_version(root)
        # a baseline is one scheduler's: another one's (after a DC change) is computed anew
        digest = hashlib.sha256(cib + where.encode()).digest()
        base = baseline.get(digest) if baseline is not None else None
        got, steps = simulator(cib if base is None else None, etree.tostring(root), timeout)
        runs = 1 if base is not None else 2
        if base is None:
            base = got or ()
            if baseline is not None:
                baseline.put(digest, base)
    except (WardenError, OSError) as exc:  # a full disk is "not proven safe", not a crash
        return Preview(error=str(exc), seconds=time.monotonic() - started, scheduler=where,
                       timed_out=isinstance(exc, ToolError) and exc.timed_out, timeout=timeout)
    known = set(base)
    return Preview(tuple(s for s in steps if s not in known), None,
                   time.monotonic() - started, cib, config, runs, where, timeout=timeout)


class Previewer(Protocol):
    """What the pass asks for: the preview of these CIB actions on the cluster as it is now,
    or None while it is being computed (the pass then holds the patch)."""

    def __call__(self, actions: tuple[AnyAction, ...], planned_on: ConfigVersion | None,
                 timeout: float) -> Preview | None: ...


def patch_key(actions: Sequence[AnyAction]) -> tuple[str, ...]:
    """What makes two passes' patches the same patch (their edits, not their wording)."""
    return tuple(sorted(describe(a) for a in actions))


@dataclass
class InlinePreviewer:
    """The preview computed in the caller's thread (`plan`, tests): on the CIB `current` reads
    now -- status included, so a VM Pacemaker moved since the last configuration change is
    previewed where it runs."""

    current: Callable[[], bytes]
    baseline: Baseline = field(default_factory=Baseline)
    simulator: Callable[[], Simulator] = lambda: LOCAL  # whose scheduler, asked each time
    timing: Timing = field(default_factory=Timing)
    retries: int = 2  # a scheduler killed at its timeout is asked again, given twice as long

    def __call__(self, actions: tuple[AnyAction, ...], planned_on: ConfigVersion | None,
                 timeout: float) -> Preview | None:
        try:
            cib = self.current()
        except WardenError as exc:
            return Preview(error=f"cannot read the CIB to preview: {exc}")
        for _ in range(self.retries + 1):
            pv = preview(cib, actions, self.timing.timeout(timeout), self.baseline,
                         self.simulator())
            self.timing.record(pv)
            if not pv.timed_out:
                break
        return pv


MAX_RESULTS = 8


class BackgroundPreviewer:
    """The service's previewer: the scheduler runs on its own thread (20 s at 16 x 1,000), the
    loop's passes go on meanwhile, and `done` wakes the loop when a result is ready. One result
    is kept per patch of the current configuration version: a pass that plans the same patch
    on the same configuration gets it; anything else starts a new preview."""

    def __init__(self, current: Callable[[], bytes], done: Callable[[], None],
                 simulator: Callable[[], Simulator] = lambda: LOCAL):
        self.current, self.done, self.simulator = current, done, simulator
        self.baseline = Baseline()
        self.timing = Timing()  # shared by every preview of this cluster
        self._lock = threading.Lock()
        self._running: tuple[object, ...] | None = None
        # Results of this configuration version, by patch: a pass that holds part of its patch
        # asks for the rest's preview next, and must still find the whole patch's.
        self._results: dict[tuple[object, ...], Preview] = {}
        self.log = logger(component="preview")

    def __call__(self, actions: tuple[AnyAction, ...], planned_on: ConfigVersion | None,
                 timeout: float) -> Preview | None:
        key = (planned_on, patch_key(actions))
        with self._lock:
            if key in self._results:
                return self._results[key]
            if self._running is not None:
                return None  # one preview at a time; the next pass asks again
            self._running = key
        threading.Thread(target=self._work, args=(key, actions, planned_on, timeout),
                         name="preview", daemon=True).start()
        return None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    def _work(self, key: tuple[object, ...], actions: tuple[AnyAction, ...],
              planned_on: ConfigVersion | None, timeout: float) -> None:
        try:
            # No retry here: a timed-out result is not kept (below), and the next pass asks
            # again -- given twice as long -- while the loop's other passes go on.
            pv = InlinePreviewer(self.current, self.baseline, self.simulator, self.timing,
                                 retries=0)(actions, planned_on, timeout)
        except Exception as exc:  # noqa: BLE001 -- a crash is "not proven safe", never a dead thread
            self.log.error("preview_crashed", error=repr(exc))
            pv = Preview(error=f"the preview crashed: {exc!r}")
        with self._lock:
            self._running = None
            # Judged on another configuration than the one planned on: the plan is stale and
            # the result is of no use to it; the next pass plans on what the cluster is now.
            if pv is not None and not pv.timed_out and (pv.config is None
                                                         or pv.config == planned_on):
                self._results = {k: v for k, v in self._results.items()
                                 if k[0] == planned_on and len(self._results) < MAX_RESULTS}
                self._results[key] = pv
        self.done()


def disruptions(pv: Preview, index: ClusterIndex, desired: DesiredState) -> list[str]:
    """The steps that would interrupt a running VM the file wants running, in words."""
    stopped_on_purpose = {vm.resource_id for vm in desired.vms if vm.wants_stopped}
    out = []
    for s in pv.steps:
        if (is_vm_resource(index, s.resource) and s.action in DISRUPTIVE and s.resource in index.running
                and s.resource not in stopped_on_purpose):
            out.append(describe_step(s))
        elif s.action == "migrate" and s.from_node and s.to_node:
            # A live migration the target's QEMU refuses is a restart (controller/model/machines.py).
            machine = machine_on(index, desired, s.resource, s.from_node)
            if machine is not None and lacks(index, s.to_node, machine):
                out.append(f"{describe_step(s)}, whose QEMU lacks its machine type {machine}: "
                           "the migration would fail and Pacemaker restart it")
    return out


def describe_step(s: TransitionStep) -> str:
    where = {
        "migrate": f"{s.from_node} → {s.to_node}", "move": f"{s.from_node} → {s.to_node}",
    }.get(s.action, s.to_node or s.from_node or "")
    word = {"migrate": "live-migrate", "move": "move (stop/start)"}.get(s.action, s.action)
    return f"{word} {s.resource} {where}".rstrip()


def gate(decisions: tuple[Decision, ...], pv: Preview, index: ClusterIndex,
         desired: DesiredState, allow: bool) -> tuple[Decision, ...]:
    """The disruption gate: a patch whose preview disrupts a running VM (or could not be
    previewed: not proven safe) is refused whole, its CIB actions with `would-disrupt`."""
    if allow:
        return decisions
    bad = disruptions(pv, index, desired)
    if pv.error is not None:
        bad = [f"the scheduler's preview failed ({pv.error[:200]}): not proven safe"]
    if not bad:
        return decisions
    why = "Pacemaker would " + "; ".join(bad)
    return tuple(
        Decision(d.action, Verdict(False, "would-disrupt", why))
        if d.verdict.admitted and isinstance(d.action, CIB_ACTIONS) else d
        for d in decisions)
