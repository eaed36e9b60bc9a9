"""Pacemaker's scheduler as an oracle: what would the cluster do with this CIB?

`crm_simulate -x FILE --run --output-as=xml` runs the real scheduler on a CIB (configuration and
status) and reports the transition it would execute; its `<actions>` list is the transition
summary per resource (crm_simulate-2.21.rng, element-rsc-action: action, resource, source, dest,
node). Nothing here touches a cluster: the CIB is a private file.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping
from pathlib import Path

import msgspec

from controller import commands
from controller.model.actions import TRANSITION_ACTIONS, TransitionStep
from controller.model.errors import ParseError, ToolError
from probes.xmlparse import parse_document

SIMULATE_TIMEOUT = 30.0
Steps = tuple[TransitionStep, ...]


class Scheduler(msgspec.Struct, frozen=True, kw_only=True):
    """Which Pacemaker a scheduler run is: its version and CRM feature set (the number a
    mixed-version cluster's DC election compares; crm_mon reports each node's)."""

    version: str
    feature_set: str

    def __str__(self) -> str:
        return f"Pacemaker {self.version} (feature set {self.feature_set})"


def parse_features(data: bytes, *, source: str = "pacemakerd --features") -> Scheduler:
    root = parse_document(data, source=source)
    el = root.find("pacemakerd")
    if el is None or not el.get("version") or not el.get("feature_set"):
        raise ParseError("no <pacemakerd version feature_set>", source=source)
    return Scheduler(version=str(el.get("version")), feature_set=str(el.get("feature_set")))


@functools.cache
def local_scheduler() -> Scheduler:
    """This node's Pacemaker (`pacemakerd --features`: no cluster needed), read once."""
    out = commands.run(["pacemakerd", "--features", "--output-as=xml"],
                       env=commands.tool_env(None), timeout=SIMULATE_TIMEOUT)
    return parse_features(out.stdout)


def run_pair(before: bytes | None, after: bytes, *, timeout: float = SIMULATE_TIMEOUT
             ) -> tuple[Steps | None, Steps]:
    """The scheduler's transitions for `after` and, when given, `before` (side by side, a core
    each), on private files: what a preview asks of whichever node runs it."""
    with tempfile.TemporaryDirectory(prefix="kvm-warden-preview-") as tmp:
        first, second = Path(tmp, "before.xml"), Path(tmp, "after.xml")
        second.write_bytes(after)
        if before is None:
            return None, simulate(str(second), timeout=timeout)
        first.write_bytes(before)
        return simulate_both(str(first), str(second), timeout=timeout)


def parse_transition(data: bytes, *, source: str = "crm_simulate") -> tuple[TransitionStep, ...]:
    root = parse_document(data, source=source)
    if root.tag != "pacemaker-result":
        raise ParseError("not crm_simulate XML", source=source, element=str(root.tag))
    actions = root.find("actions")
    steps = []
    for el in actions if actions is not None else ():
        if el.tag != "rsc_action":
            continue
        action, resource = (el.get("action") or "").lower(), el.get("resource")
        if action not in TRANSITION_ACTIONS or not resource:
            continue  # reload, re-promote...: not a change of where or whether it runs
        source_node = el.get("source") or el.get("node")
        target = el.get("dest") or (el.get("node") if action in ("start", "promote") else None)
        if action in ("start", "promote"):
            source_node = None
        steps.append(TransitionStep(resource=resource.split(":", 1)[0], action=action,
                                    from_node=source_node, to_node=target))
    return tuple(steps)


def _argv(cib_path: str) -> list[str]:
    # --run: the scheduler only (what --simulate adds, executing the transition, is not needed
    # and costs minutes at 16 x 1,000).
    return ["crm_simulate", "-x", cib_path, "--run", "--output-as=xml"]


def simulate(cib_path: str, *, timeout: float = SIMULATE_TIMEOUT) -> tuple[TransitionStep, ...]:
    """The transition Pacemaker's scheduler computes for the CIB in `cib_path`."""
    out = commands.run(_argv(cib_path), env=commands.tool_env(None), timeout=timeout)
    return parse_transition(out.stdout, source=f"crm_simulate -x {cib_path}")


def settle(cib_path: str, out_path: str, *, timeout: float = SIMULATE_TIMEOUT) -> None:
    """The cluster once the scheduler's transition for `cib_path` has run (`crm_simulate
    --simulate --save-output`): every resource where Pacemaker would put it."""
    commands.run(["crm_simulate", "-x", cib_path, "--simulate", "--quiet", "--save-output",
                  out_path], env=commands.tool_env(None), timeout=timeout)


def simulate_both(first: str, second: str, *, timeout: float = SIMULATE_TIMEOUT
                  ) -> tuple[tuple[TransitionStep, ...], tuple[TransitionStep, ...]]:
    """Two scheduler runs side by side (a core each): the preview's baseline and patched CIB."""
    procs = [commands.start(_argv(p), env=commands.tool_env(None)) for p in (first, second)]
    try:
        outs = [commands.finish(p, timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return (parse_transition(outs[0].stdout, source=f"crm_simulate -x {first}"),
            parse_transition(outs[1].stdout, source=f"crm_simulate -x {second}"))


def parse_scores(data: bytes, *, source: str = "crm_simulate -s") -> dict[str, dict[str, str]]:
    """Each primitive's allocation score per node (`node_weight` of pcmk__primitive_assign,
    crm_simulate -s): the number the scheduler places it by, "-INFINITY" where it may not run."""
    root = parse_document(data, source=source)
    if root.tag != "pacemaker-result":
        raise ParseError("not crm_simulate XML", source=source, element=str(root.tag))
    out: dict[str, dict[str, str]] = {}
    for el in root.iter("node_weight"):
        if el.get("function") == "pcmk__primitive_assign" and el.get("id") and el.get("node"):
            out.setdefault(str(el.get("id")), {})[str(el.get("node"))] = str(el.get("score"))
    return out


def allocation_scores(cib_path: str, *, timeout: float = SIMULATE_TIMEOUT
                      ) -> dict[str, dict[str, str]]:
    out = commands.run(["crm_simulate", "-x", cib_path, "--show-scores", "--output-as=xml"],
                       env=commands.tool_env(None), timeout=timeout)
    return parse_scores(out.stdout, source=f"crm_simulate -s -x {cib_path}")


def simulate_failures(cibs: Mapping[tuple[str, ...], str], *, workers: int = 2,
                      timeout: float = SIMULATE_TIMEOUT
                      ) -> dict[tuple[str, ...], Steps | ToolError]:
    """What the scheduler does if each group of nodes fails at once (`crm_simulate
    --node-fail`, once per node of the group), each asked of its own CIB file (the whole
    cluster's, or one focused on that group): fencing them, then recovering their resources
    where they fit (with utilization: or leaving them stopped). `workers` runs at a time (a
    core each); a failed run is its error."""
    out: dict[tuple[str, ...], Steps | ToolError] = {}
    todo = list(cibs.items())
    for i in range(0, len(todo), max(1, workers)):
        batch = todo[i:i + max(1, workers)]
        procs = [(g, path, commands.start(
            [*_argv(path), *(a for n in g for a in ("--node-fail", n))],
            env=commands.tool_env(None))) for g, path in batch]
        for group, path, proc in procs:
            said = " ".join(f"--node-fail {n}" for n in group)
            try:
                done = commands.finish(proc, timeout=timeout)
                out[group] = parse_transition(done.stdout,
                                              source=f"crm_simulate -x {path} {said}")
            except (ToolError, ParseError) as exc:
                out[group] = exc if isinstance(exc, ToolError) else ToolError(
                    ("crm_simulate", *said.split()), str(exc))
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    return out
