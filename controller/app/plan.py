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
from controller.engine.observe import observe_once
from controller.model.actions import Finding, Outcome, describe
from controller.model.desired import load_desired
from controller.model.errors import DesiredStateError
from controller.model.index import build_index
from reconcilers.all import ORDER

DEFAULT_STATE_DIR = "/var/lib/kvm-warden"


def plan_command(desired_path: str, cib_file: str | None, as_json: bool, apply: bool,
                 state_dir: str | None = None) -> int:
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
            "findings": [msgspec.to_builtins(f) for f in findings],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_plan(decisions, findings, applied))
    for o in failed:
        print(f"kvm-warden: not applied: {describe(o.action)}: {o.error}", file=sys.stderr)
    if failed:
        return 1
    remaining = [d for d in decisions if id(d.action) not in applied]
    return 2 if remaining else 0


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
