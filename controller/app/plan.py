"""`kvm-warden plan`: one pass without a loop, printed; `--apply` makes the admitted changes."""

from __future__ import annotations

import json
import sys
import time

import msgspec

from controller.actuators.pacemaker import CibConflict, PacemakerActuator
from controller.engine.audit import AuditLog, invoking_user, records
from controller.engine.decide import Decision, decide
from controller.engine.guard import Guard
from controller.engine.ledger import DEFAULT_STATE_DIR
from controller.engine.observe import observe_once
from controller.engine.preview import Preview, describe_step, gate, preview
from controller.model.actions import CIB_ACTIONS, Finding, Outcome, describe
from controller.model.desired import load_desired
from controller.model.errors import DesiredStateError
from controller.model.index import build_index
from reconcilers.all import ORDER


def plan_command(desired_path: str, cib_file: str | None, as_json: bool, apply: bool,
                 state_dir: str | None = None, allow_disruption: bool = False) -> int:
    try:
        desired = load_desired(desired_path)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    observed, raw = observe_once(cib_file)
    now = time.time()
    index = build_index(observed)
    decisions, findings = decide(index, desired, Guard(), now, now)
    # What Pacemaker's scheduler will do once the patch is applied, before it is.
    cib_actions = [d.action for d in decisions if d.verdict.admitted
                   and isinstance(d.action, CIB_ACTIONS)]
    pv = (preview(raw, cib_actions, desired.policy.preview_timeout_seconds) if cib_actions
          else Preview())
    decisions = gate(decisions, pv, index, desired,
                     allow_disruption or desired.policy.allow_disruption)
    outcomes: list[Outcome] = []
    if apply:
        audit = AuditLog(state_dir or DEFAULT_STATE_DIR)
        admitted = [d.action for d in decisions if d.verdict.admitted]
        if admitted:
            try:
                outcomes = PacemakerActuator(cib_file).apply(admitted, cib=raw)
            except CibConflict as exc:
                audit.write(records(decisions, [], invoking_user(),
                                    f"not applied, the CIB changed meanwhile: {exc}"))
                print(f"kvm-warden: the CIB changed while planning ({exc}); nothing applied, "
                      "run plan again", file=sys.stderr)
                return 1
        audit.write(records(decisions, outcomes, invoking_user()))
    applied = {id(o.action) for o in outcomes if o.applied}
    failed = [o for o in outcomes if not o.applied]
    if as_json:
        doc = {
            "actions": [
                {**msgspec.to_builtins(d.action), "description": describe(d.action),
                 "verdict": d.verdict.reason, "detail": d.verdict.detail,
                 "applied": id(d.action) in applied}
                for d in decisions
            ],
            "transition": msgspec.to_builtins(pv.steps),
            "transition_error": pv.error,
            "findings": [msgspec.to_builtins(f) for f in findings],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_plan(decisions, findings, applied))
        if cib_actions:
            print(render_transition(pv))
    for o in failed:
        print(f"kvm-warden: not applied: {describe(o.action)}: {o.error}", file=sys.stderr)
    if failed:
        return 1
    remaining = [d for d in decisions if id(d.action) not in applied]
    return 2 if remaining else 0


def render_transition(pv: Preview) -> str:
    """The scheduler's verdict on the patch, one line per resource, with counts."""
    if pv.error is not None:
        return f"transition: not known -- {pv.error}"
    if not pv.steps:
        return "transition (Pacemaker's scheduler): nothing moves, starts or stops."
    lines = [f"transition (Pacemaker's scheduler, {pv.seconds * 1000:.0f} ms):"]
    lines += [f"  {describe_step(s)}" for s in pv.steps]
    counts: dict[str, int] = {}
    for s in pv.steps:
        counts[s.action] = counts.get(s.action, 0) + 1
    lines.append("  " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())))
    return "\n".join(lines)


def render_plan(decisions: tuple[Decision, ...], findings: tuple[Finding, ...],
                applied: set[int]) -> str:
    if not decisions and not findings:
        return "Nothing to do: the cluster matches the desired state."
    lines: list[str] = []
    for rec in ORDER:
        mine = [d for d in decisions if d.action.reconciler == rec]
        if not mine:
            continue
        lines.append(f"{rec}:")
        for d in mine:
            mark = "applied" if id(d.action) in applied else (
                "admitted" if d.verdict.admitted else f"REFUSED: {d.verdict.reason}")
            lines.append(f"  + {describe(d.action)}  [{mark}]")
            lines.append(f"      why: {d.action.why}")
            if d.verdict.detail and not d.verdict.admitted:
                lines.append(f"      guard: {d.verdict.detail}")
    if findings:
        lines.append("findings (reported, never fixed automatically):")
        for f in findings:
            lines.append(f"  ! {f.severity}: {f.subject}: {f.message}")
    total = len(decisions)
    admitted = sum(d.verdict.admitted for d in decisions)
    lines.append(f"{total} action(s): {admitted} admitted, {total - admitted} refused; "
                 f"{len(applied)} applied.")
    return "\n".join(lines)
