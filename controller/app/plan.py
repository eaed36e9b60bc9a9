"""`kvm-warden plan`: one pass without a loop, printed; `--apply` makes the admitted changes.

The pass is the service's own (engine/pipeline.py) over the service's ledger: `plan --apply`
honours the cooldowns, rate limits, breakers and once-per-pause marks the service recorded,
and records its outcomes there. It applies only as the cluster's one writer
(engine/writer.py): while a controller runs, it refuses and names it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import msgspec

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.text import for_terminal
from controller.engine.audit import AuditLog, PassAudit, invoking_user
from controller.engine.decide import Decision
from controller.engine.ledger import DEFAULT_STATE_DIR, LedgerFile
from controller.engine.observe import observe_once
from controller.engine.pipeline import PassEffects, PassInput, PassOutput, drift, reconcile
from controller.engine.preview import InlinePreviewer, Preview, describe_step
from controller.engine.writer import WriterBusy, WriterLock, lock_path, offline_state_dir
from controller.model.actions import Finding, describe
from controller.model.desired import DesiredState, load_desired
from controller.model.errors import DesiredStateError
from reconcilers.all import ORDER

EXIT_BUSY = 3  # another writer (a running controller) holds the cluster


def plan_command(desired_path: str, cib_file: str | None, as_json: bool, apply: bool,
                 state_dir: str | None = None, allow_disruption: bool = False) -> int:
    try:
        desired = load_desired(desired_path)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    # Offline work never touches the production state directory: a CIB file without
    # --state-dir gets a private, empty ledger for this run.
    private = cib_file is not None and state_dir is None
    state = Path(state_dir) if state_dir else (
        offline_state_dir() if private and apply else Path(DEFAULT_STATE_DIR))
    lock = WriterLock(lock_path(cib_file, state), "plan --apply") if apply else None
    try:
        if lock is not None:
            lock.acquire()
        return _plan(desired, cib_file, as_json, apply, state, allow_disruption,
                     read_ledger=not private)
    except WriterBusy as exc:
        print(f"kvm-warden: nothing applied: {exc}", file=sys.stderr)
        return EXIT_BUSY
    finally:
        if lock is not None:
            lock.release()
        if private and apply:
            shutil.rmtree(state, ignore_errors=True)


def _plan(desired: DesiredState, cib_file: str | None, as_json: bool, apply: bool,
          state: Path, allow_disruption: bool, read_ledger: bool) -> int:
    ledger_file = LedgerFile(state)
    # Without --apply the ledger is only read (a plan shows the cooldowns the service keeps);
    # an unreadable one is the service's to set aside, not a read-only command's.
    ledger = ledger_file.load(set_aside=apply) if read_ledger else ledger_file.empty()
    observed, raw = observe_once(cib_file)
    now = time.time()
    actuator = PacemakerActuator(cib_file)
    # The CIB was just read, status included: it is the cluster as it is now.
    out = reconcile(
        PassInput(observed, desired, now, now, raw),
        PassEffects(ledger, InlinePreviewer(lambda: raw),
                    PassAudit(AuditLog(state if apply else None), invoking_user(),
                              dedupe=False),
                    actuator if apply else None, allow_disruption))
    if apply:
        ledger_file.save(ledger, time.time())
    if out.conflict:
        print(f"kvm-warden: {out.error}; nothing applied, run plan again", file=sys.stderr)
        return 1
    _print(out, as_json)
    failed = [o for o in out.outcomes if not o.applied]
    for o in failed:
        print(f"kvm-warden: not applied: {describe(o.action)}: {o.error}", file=sys.stderr)
    if out.error is not None:
        print(f"kvm-warden: {out.error}", file=sys.stderr)
    if failed or out.error is not None:
        return 1
    applied = {id(o.action) for o in out.outcomes if o.applied}
    remaining = [d for d in out.decisions if id(d.action) not in applied]
    return 2 if remaining else 0


def _print(out: PassOutput, as_json: bool) -> None:
    applied = {id(o.action) for o in out.outcomes if o.applied}
    pv = out.preview if out.preview is not None else Preview()
    if as_json:
        doc = {
            "actions": [
                {**msgspec.to_builtins(d.action), "description": describe(d.action),
                 "verdict": d.verdict.reason, "detail": d.verdict.detail,
                 "applied": id(d.action) in applied}
                for d in out.decisions
            ],
            "transition": msgspec.to_builtins(pv.steps),
            "transition_error": pv.error,
            "scheduler": pv.scheduler,
            "findings": [msgspec.to_builtins(f) for f in out.findings],
            "pending": [{**msgspec.to_builtins(f), "age_s": round(age, 1)}
                        for f, age in out.pending],
            # the one verdict the web view, `status` and kvm_warden_drift_objects share
            "drift": [{"subject": i.subject, "reconciler": i.reconciler, "words": i.words}
                      for i in drift(out.decisions, out.findings, out.pending).values()],
        }
        doc["matches"] = not doc["drift"]
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(for_terminal(render_plan(out.decisions, out.findings, applied, out.pending)))
        if out.preview is not None:
            print(for_terminal(render_transition(pv)))


def render_transition(pv: Preview) -> str:
    """The scheduler's verdict on the patch, one line per resource, with counts."""
    if pv.error is not None:
        return f"transition: not known -- {pv.error}"
    by = f", {pv.scheduler}" if pv.scheduler else ""
    if not pv.steps:
        return f"transition (Pacemaker's scheduler{by}): nothing moves, starts or stops."
    lines = [f"transition (Pacemaker's scheduler{by}, {pv.seconds * 1000:.0f} ms):"]
    lines += [f"  {describe_step(s)}" for s in pv.steps]
    counts: dict[str, int] = {}
    for s in pv.steps:
        counts[s.action] = counts.get(s.action, 0) + 1
    lines.append("  " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())))
    return "\n".join(lines)


def render_plan(decisions: tuple[Decision, ...], findings: tuple[Finding, ...],
                applied: set[int], pending: tuple[tuple[Finding, float], ...] = ()) -> str:
    if not decisions and not findings and not pending:
        return "Nothing to do: the cluster matches the desired state."
    lines: list[str] = []
    if not drift(decisions, findings, pending):
        lines.append("The cluster matches the desired state; read the findings below.")
    elif not decisions:
        # Not "matches": what the file asks is in Pacemaker's hands, not done yet.
        lines.append("No change to make; not met yet:")
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
    if pending:
        # Pacemaker may still be carrying it out: a finding once it lasts FINDING_PERSIST_SECONDS.
        lines.append("pending (not met yet; a finding if it lasts):")
        for f, age in pending:
            lines.append(f"  ~ {f.subject}: pending ({age:.0f} s): {f.message}")
    total = len(decisions)
    admitted = sum(d.verdict.admitted for d in decisions)
    lines.append(f"{total} action(s): {admitted} admitted, {total - admitted} refused; "
                 f"{len(applied)} applied.")
    return "\n".join(lines)
