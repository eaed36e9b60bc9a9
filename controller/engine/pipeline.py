"""One pass, for the service and for `plan` alike: decide -> preview -> gate -> apply -> record
the outcomes in the ledger -> audit.

There is no second, weaker path: `plan --apply` runs this with the ledger of the state
directory it shares with the service (cooldowns, rates, the breaker, the once-per-pause `fail:`
marks, the cleanup history), under the one-writer lock (engine/writer.py). What differs between
the two is only what they hand in: which previewer (the service's runs off its loop's thread),
who is recorded in the audit, and whether to apply at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from controller import metrics
from controller.actuators.pacemaker import CibConflict, PacemakerActuator
from controller.engine.audit import PassAudit
from controller.engine.capacity import admission
from controller.engine.decide import Decision, decide_pass, whole_units
from controller.engine.explain import blocked_finding, finding, machine_blocked, unasked_moves
from controller.engine.guard import Guard, Reason, Verdict
from controller.engine.ledger import Ledger
from controller.engine.preview import Preview, Previewer, describe_step, gate
from controller.logs import logger
from controller.model.actions import CIB_ACTIONS, Finding, Outcome, describe
from controller.model.desired import DesiredState
from controller.model.errors import WardenError
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import ObservedState
from reconcilers.capacity import NAME as CAPACITY  # its sizes are the proof's baseline

log = logger(component="pass")


@dataclass(frozen=True)
class PassInput:
    """What one pass plans on: one reading of the cluster and the desired file. The loop,
    `plan` and the web view's review all make one and call reconcile: the same pass."""

    observed: ObservedState
    desired: DesiredState
    now: float  # wall clock
    observed_at: float | None  # when Pacemaker was read (the guard's freshness)
    cib: bytes | None  # the CIB of that reading: the patch's base when nothing fresher is
    scope: frozenset[str] | None = None  # VM names of an incremental pass

    @cached_property
    def index(self) -> ClusterIndex:
        """The reading indexed, once (every lookup a reconciler needs is a dict or set)."""
        return build_index(self.observed)


@dataclass(frozen=True)
class PassEffects:
    """Who acts, and how: what differs between the service's passes and `plan`'s."""

    ledger: Ledger
    previewer: Previewer
    audit: PassAudit
    actuator: PacemakerActuator | None = None  # None: plan only, nothing is sent
    allow_disruption: bool = False
    keep_timers: bool = False  # the service's ledger: its finding timers forget what is gone


@dataclass(frozen=True)
class PassOutput:
    decisions: tuple[Decision, ...]
    findings: tuple[Finding, ...]
    outcomes: tuple[Outcome, ...] = ()
    preview: Preview | None = None
    conflict: bool = False  # the CIB's configuration changed under the plan: re-plan at once
    error: str | None = None
    requeue_at: float | None = None  # a reconciler wants a pass then (wall clock)
    # placement findings not yet persistent, with their age (s): said as "pending"
    pending: tuple[tuple[Finding, float], ...] = ()

    @property
    def applied(self) -> bool:
        return any(o.applied for o in self.outcomes)


def reconcile(inp: PassInput, fx: PassEffects) -> PassOutput:
    decided = decide_pass(inp.index, inp.desired, Guard(fx.ledger), inp.now, inp.observed_at,
                          inp.scope)
    decisions = decided.decisions
    no_room = fx.audit.unwritable() if fx.actuator is not None else None
    if no_room is not None:  # no change that could not be recorded
        held_verdict = Verdict(False, "audit-unwritable", no_room)
        decisions = tuple(Decision(d.action, held_verdict) if d.verdict.admitted else d
                          for d in decisions)
    decisions, pv, stale, held = _preview(decisions, inp, fx)
    out = PassOutput(decisions, decided.findings + held, preview=pv,
                     requeue_at=decided.requeue_at)
    if stale:
        out = replace(out, conflict=True,
                      error="not applied, the CIB configuration changed since it was read")
    elif fx.actuator is not None:
        out = _apply(out, inp, fx, fx.actuator, pv.cib if pv is not None else None)
    fx.audit.write(out.decisions, out.outcomes, out.error, full=inp.scope is None,
                   previewed_by=pv.scheduler if pv is not None else None)
    # Placement findings count once they persist (a VM Pacemaker is about to move is not a
    # finding yet); the younger ones are said as pending. The same for the loop, plan and the
    # web view's review.
    kept, pending = fx.ledger.persistent(out.findings, inp.now,
                                         prune=fx.keep_timers and inp.scope is None)
    return replace(out, findings=kept, pending=pending)


MAX_ROUNDS = 3  # previews per pass: the patch, then without what it would move unasked


def _preview(decisions: tuple[Decision, ...], inp: PassInput, fx: PassEffects
             ) -> tuple[tuple[Decision, ...], Preview | None, bool, tuple[Finding, ...]]:
    """Every patch is previewed on the cluster as it is now. Returns the gated decisions, the
    preview of what is left to apply, whether the plan is stale (the configuration moved
    since it was read), and the findings of the moves held as unasked."""
    cib = inp.index.observed.cib
    planned_on = cib.version if cib is not None else None
    policy = inp.desired.policy
    prefers = {vm.resource_id: vm.placement.prefer for vm in inp.desired.vms
               if vm.placement.prefer}
    held: list[Finding] = []
    pv: Preview | None = None
    for _ in range(MAX_ROUNDS):
        patch = tuple(d.action for d in decisions
                      if d.verdict.admitted and isinstance(d.action, CIB_ACTIONS))
        if not patch:
            return decisions, pv, False, tuple(held)
        pv = fx.previewer(patch, planned_on, policy.preview_timeout_seconds)
        if pv is None:
            return (_hold(decisions, "the scheduler's preview of this patch is running"), None,
                    False, tuple(held))
        metrics.PREVIEW_DURATION.observe(pv.seconds)
        if pv.error is not None:
            log.warning("preview_failed", error=pv.error)
        if pv.config is not None and planned_on is not None and pv.config != planned_on:
            return (_hold(decisions, "the CIB configuration changed since it was read: "
                          "planning again"), pv, True, tuple(held))
        unasked = unasked_moves(pv.steps, patch, inp.index, prefers) if pv.error is None else []
        blocked = machine_blocked(pv.steps, patch, inp.index, inp.desired) \
            if pv.error is None else []
        if not unasked and not blocked:
            allow = fx.allow_disruption or policy.allow_disruption
            decisions, warned = _admit(gate(decisions, pv, inp.index, inp.desired, allow), pv,
                                       inp)
            return decisions, pv, False, (*held, *warned)
        words: dict[int, list[str]] = {}
        for u in unasked:
            word = describe_step(u.step)
            held.append(finding(u, word))
            for a in u.causes:
                words.setdefault(id(a), []).append(word)
        verdicts = {k: Verdict(False, "would-move-unasked", "Pacemaker would " + "; ".join(w)
                               + ", which nothing in the desired file asks for")
                    for k, w in words.items()}
        for b in blocked:  # asked for or not: a failed migration is a restart
            held.append(blocked_finding(b, inp.index))
            for a in b.causes:
                verdicts[id(a)] = Verdict(False, "machine-type", (
                    f"Pacemaker would {describe_step(b.step)}, whose QEMU lacks its machine "
                    f"type {b.machine}: the migration would fail and Pacemaker restart it"))
        decisions = tuple(Decision(d.action, verdicts[id(d.action)])
                          if id(d.action) in verdicts and d.verdict.admitted else d
                          for d in decisions)
        decisions = whole_units(decisions)
    # Still moving something unasked after the last round: nothing of the patch goes.
    return (_hold(decisions, "the patch kept moving VMs nothing asks to move", "would-move-unasked"),
            pv, False, tuple(held))


def _admit(decisions: tuple[Decision, ...], pv: Preview, inp: PassInput
           ) -> tuple[tuple[Decision, ...], tuple[Finding, ...]]:
    """With the file's `capacity:` (tolerate k >= 1): a patch whose result would leave a VM
    without room after a node's failure (or k nodes' at once), where it has room today, is
    held (admission: hold) or made and said (warn). Sizes and capacity themselves
    (reconcilers/capacity.py) describe the hosts as they are: they are the baseline of the
    proof, never held by it."""
    cap = inp.desired.capacity
    patch = tuple(d.action for d in decisions
                  if d.verdict.admitted and isinstance(d.action, CIB_ACTIONS))
    sizes = tuple(a for a in patch if a.reconciler == CAPACITY)
    if cap is None or cap.tolerate < 1 or pv.error is not None or pv.cib is None \
            or len(sizes) == len(patch):
        return decisions, ()
    verdict = admission(pv.cib, patch, inp.index, sizes, cap.tolerate)
    if verdict.admitted:
        return decisions, ()
    words = verdict.words()
    if cap.admission == "warn" and verdict.error is None:
        return decisions, (Finding(
            reconciler=CAPACITY, kind="would-break-failover", severity="warning",
            subject="capacity", message=f"made although it breaks N+1 (capacity.admission: "
            f"warn): {words}"),)
    held = Verdict(False, "would-break-failover", words + (
        "; add capacity, or set capacity.admission: warn to make it anyway"
        if verdict.error is None else ""))
    return tuple(Decision(d.action, held) if d.verdict.admitted and d.action in patch
                 and d.action not in sizes else d for d in decisions), ()


def _hold(decisions: tuple[Decision, ...], detail: str, reason: Reason = "previewing"
          ) -> tuple[Decision, ...]:
    verdict = Verdict(False, reason, detail)
    return tuple(Decision(d.action, verdict)
                 if d.verdict.admitted and isinstance(d.action, CIB_ACTIONS) else d
                 for d in decisions)


def _apply(out: PassOutput, inp: PassInput, fx: PassEffects, actuator: PacemakerActuator,
           base: bytes | None) -> PassOutput:
    """Send the admitted actions (one CIB patch, then crm_resource); record every outcome in
    the ledger: an applied or failed action spends its rate and starts its cooldown."""
    admitted = [d.action for d in out.decisions if d.verdict.admitted]
    if not admitted:
        return out
    outcomes: list[Outcome] = []
    conflict, error = False, None
    try:
        outcomes = actuator.apply(admitted, cib=base if base is not None else inp.cib)
    except CibConflict as exc:
        conflict, error = True, f"not applied, the CIB changed meanwhile: {exc}"
        metrics.CIB_CONFLICTS.inc()
        log.warning("cib_conflict", error=str(exc))
    except WardenError as exc:
        error = str(exc)
        metrics.ACTUATOR_ERRORS.inc()
        log.error("apply_failed", error=str(exc))
    except OSError as exc:  # a temporary file the patch needs (disk full): a failed pass
        error = f"cannot prepare the patch: {exc}"
        metrics.ACTUATOR_ERRORS.inc()
        log.error("apply_failed", error=error)
    for o in outcomes:
        fx.ledger.record(o.action, o.applied, inp.index, inp.now)
        metrics.APPLIED.labels(kind=type(o.action).__name__,
                               outcome="applied" if o.applied else "failed").inc()
    return replace(out, outcomes=tuple(outcomes), conflict=conflict, error=error)


# Findings that say a VM is not as the file wants it although no action of the pass is left.
DRIFT_FINDINGS = frozenset({"missing-resource", "wrong-agent", "placement-unsatisfiable",
                            "unasked-move", "operator-ban"})


@dataclass(frozen=True)
class DriftItem:
    """One object not as the file wants it, and why in words: the one drift verdict behind
    `plan`, `status`, the web view's rows and header, and kvm_warden_drift_objects."""

    subject: str  # the resource id, or the object a cluster-wide action changes
    reconciler: str
    words: tuple[str, ...]
    rsc: str | None = None  # a VM's resource: its row shows the words


def drift(decisions: Sequence[Decision], findings: Sequence[Finding],
          pending: Sequence[tuple[Finding, float]] = ()) -> dict[str, DriftItem]:
    """Every action a reconciler still wants (with the verdict when it was not admitted), the
    findings that say why the file is not met, and those not yet persistent ("pending")."""
    words: dict[str, list[str]] = {}
    owner: dict[str, tuple[str, str | None]] = {}

    def add(subject: str, reconciler: str, rsc: str | None, word: str) -> None:
        words.setdefault(subject, []).append(word)
        owner.setdefault(subject, (reconciler, rsc))

    for d in decisions:
        held = "" if d.verdict.admitted else f" [{d.verdict.reason}]"
        rid = d.action.resource
        add(rid or describe(d.action), d.action.reconciler, rid, d.action.why + held)
    for f in findings:
        if f.kind in DRIFT_FINDINGS:
            add(f.rsc or f.subject, f.reconciler, f.rsc, f.kind)
    for f, _age in pending:
        if f.kind in DRIFT_FINDINGS:
            add(f.rsc or f.subject, f.reconciler, f.rsc, f"pending: {f.kind}")
    return {s: DriftItem(s, owner[s][0], tuple(dict.fromkeys(w)), owner[s][1])
            for s, w in words.items()}


def drift_by_resource(items: Mapping[str, DriftItem]) -> dict[str, tuple[str, ...]]:
    """What each VM's row shows in its drift column."""
    return {i.rsc: i.words for i in items.values() if i.rsc is not None}
