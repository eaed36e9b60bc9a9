"""Preview: what Pacemaker's scheduler will do once a patch is applied -- before it is.

The pass's CIB actions are applied to a private copy of the CIB (status included) exactly as
the actuator would edit it; `crm_simulate` then computes the transition for the copy and for
the unpatched CIB, and the difference is what the patch causes (a transition Pacemaker was
running anyway is not the patch's doing). A step that stops, restarts, cold-moves or recovers a
running VM the desired file does not ask to stop is a disruption: the disruption gate refuses
such a patch unless allowed. Live migrations are not disruptions.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from controller.actuators.cibedit import CibEditor, EditError
from controller.engine.decide import Decision
from controller.engine.guard import Verdict
from controller.model.actions import CIB_ACTIONS, AnyAction, TransitionStep
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.index import ClusterIndex
from probes.pacemaker.simulate import simulate_both

DISRUPTIVE = frozenset({"stop", "restart", "move", "recover"})


@dataclass(frozen=True)
class Preview:
    steps: tuple[TransitionStep, ...] = ()
    error: str | None = None  # the scheduler could not say (timed out, failed): not proven safe
    seconds: float = 0.0


def preview(cib: bytes, actions: Sequence[AnyAction], timeout: float) -> Preview:
    started = time.monotonic()
    try:
        root = etree.fromstring(cib, parser=etree.XMLParser(resolve_entities=False,
                                                            huge_tree=True))
        editor = CibEditor(root)
        for a in actions:
            try:
                editor.apply(a)
            except EditError:
                continue  # the actuator would report this one as failed: not in the patch
        with tempfile.TemporaryDirectory(prefix="kvm-warden-preview-") as tmp:
            before, after = Path(tmp, "before.xml"), Path(tmp, "after.xml")
            before.write_bytes(cib)
            after.write_bytes(etree.tostring(root))
            base, steps = simulate_both(str(before), str(after), timeout=timeout)
            baseline = set(base)
    except (WardenError, etree.XMLSyntaxError) as exc:
        return Preview(error=str(exc), seconds=time.monotonic() - started)
    return Preview(tuple(s for s in steps if s not in baseline), None,
                   time.monotonic() - started)


def disruptions(pv: Preview, index: ClusterIndex, desired: DesiredState) -> list[str]:
    """The steps that would interrupt a running VM the file wants running, in words."""
    stopped_on_purpose = {vm.resource_id for vm in desired.vms if vm.state == "stopped"}
    out = []
    for s in pv.steps:
        cfg = index.configured.get(s.resource)
        is_vm = cfg is not None and (cfg.agent or "").endswith(":VirtualDomain")
        if (is_vm and s.action in DISRUPTIVE and s.resource in index.running
                and s.resource not in stopped_on_purpose):
            out.append(describe_step(s))
    return out


def describe_step(s: TransitionStep) -> str:
    where = {
        "migrate": f"{s.from_node} → {s.to_node}", "move": f"{s.from_node} → {s.to_node}",
    }.get(s.action, s.to_node or s.from_node or "")
    word = {"migrate": "live-migrate", "move": "move (stop/start)"}.get(s.action, s.action)
    return f"{word} {s.resource} {where}".rstrip()


MOVING = frozenset({"placement", "storage", "nodes"})  # reconcilers whose patches move VMs


def needs_preview(decisions: Sequence[Decision]) -> bool:
    """Whether a pass's admitted actions could make Pacemaker move VMs (the loop previews
    those; `plan` previews every patch)."""
    return any(d.verdict.admitted and d.action.reconciler in MOVING for d in decisions)


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
