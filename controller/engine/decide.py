"""The pure middle of a pass: every reconciler plans, the guard admits or refuses each action.

No I/O here. The guard admits against a tentative copy of the ledger that it spends from as it
goes, so that rate limits and the migration ceiling hold within one pass too (five moves with
max_concurrent_migrations=2: two admitted, three not); the real ledger changes only when the
outcomes are known (loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.engine.guard import Guard, Verdict
from controller.model.actions import AnyAction, Finding
from controller.model.context import Context
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from reconcilers.all import plan_all


@dataclass(frozen=True)
class Decision:
    action: AnyAction
    verdict: Verdict


def decide(
    index: ClusterIndex, desired: DesiredState, guard: Guard, now: float,
    observed_at: float | None, scope: frozenset[str] | None = None,
) -> tuple[tuple[Decision, ...], tuple[Finding, ...]]:
    decided = decide_pass(index, desired, guard, now, observed_at, scope)
    return decided.decisions, decided.findings


@dataclass(frozen=True)
class Decided:
    decisions: tuple[Decision, ...]
    findings: tuple[Finding, ...]
    requeue_at: float | None  # a reconciler wants a pass then (wall clock)


def decide_pass(
    index: ClusterIndex, desired: DesiredState, guard: Guard, now: float,
    observed_at: float | None, scope: frozenset[str] | None = None,
) -> Decided:
    ctx = Context(index=index, desired=desired, scope=scope, ledger=guard.ledger.view(), now=now)
    plan = plan_all(ctx)
    tentative = Guard(guard.ledger.tentative())
    decisions = []
    for action in plan.actions:
        verdict = tentative.admit(action, index, desired.policy, now, observed_at)
        if verdict.admitted:
            tentative.ledger.spend(action, index, now)
        decisions.append(Decision(action, verdict))
    return Decided(whole_units(tuple(decisions)), plan.findings, plan.requeue_at)


def whole_units(decisions: tuple[Decision, ...]) -> tuple[Decision, ...]:
    """An action of a unit refused refuses the others with it, for the same reason: half an
    enrollment (its primitive without the location that says where it runs) is worse than
    none."""
    refused: dict[str, Decision] = {}
    for d in decisions:
        if d.action.unit and not d.verdict.admitted:
            refused.setdefault(d.action.unit, d)
    if not refused:
        return decisions
    out = []
    for d in decisions:
        first = refused.get(d.action.unit) if d.action.unit else None
        if first is not None and d.verdict.admitted:
            d = Decision(d.action, Verdict(False, first.verdict.reason,
                                           f"with {first.action.key}: {first.verdict.detail}"))
        out.append(d)
    return tuple(out)
