"""`kvm-warden plan`: one pass without a loop, printed; `--apply` makes the admitted changes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import msgspec

from controller.actuators.pacemaker import CibConflict, PacemakerActuator
from controller.engine.guard import Guard
from controller.engine.loop import Decision, decide
from controller.model.actions import Finding, describe
from controller.model.desired import load_desired
from controller.model.errors import DesiredStateError, ParseError
from controller.model.index import build_index
from controller.model.observed import ObservedState
from probes.pacemaker.cib import parse_cib
from probes.pacemaker.read import CibCache, read_status
from reconcilers.all import ORDER
from reconcilers.health import CleanupHistory


def observe_once(cib_file: str | None, cache: CibCache | None = None
                 ) -> tuple[ObservedState, bytes]:
    """The CIB bytes (the base of any patch) and crm_mon's status, read from the same source.

    With a `cache` (the long-running controller), the CIB is re-read only when its
    configuration version changed."""
    if cache is not None:
        cib, raw = cache.get()
        status = read_status(cib_file)
        return ObservedState(status=status, cib=cib, observed_at={"pacemaker": time.time()}), raw
    actuator = PacemakerActuator(cib_file)
    if cib_file is not None:
        try:
            raw = Path(cib_file).read_bytes()
        except OSError as exc:
            raise ParseError(f"cannot read: {exc.strerror}", source=cib_file) from None
    else:
        raw = actuator.query()
    cib = parse_cib(raw, source=cib_file or "cibadmin --query")
    status = read_status(cib_file)
    now = time.time()
    return ObservedState(status=status, cib=cib, observed_at={"pacemaker": now}), raw


def plan_command(desired_path: str, cib_file: str | None, as_json: bool, apply: bool) -> int:
    try:
        desired = load_desired(desired_path)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    observed, raw = observe_once(cib_file)
    now = time.time()
    index = build_index(observed)
    decisions, findings = decide(index, desired, Guard(), CleanupHistory(), now, now)
    outcomes = []
    if apply:
        admitted = [d.action for d in decisions if d.verdict.admitted]
        if admitted:
            try:
                outcomes = PacemakerActuator(cib_file).apply(admitted, cib=raw)
            except CibConflict as exc:
                print(f"kvm-warden: the CIB changed while planning ({exc}); nothing applied, "
                      "run plan again", file=sys.stderr)
                return 1
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
