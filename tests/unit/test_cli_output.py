"""The CLI's human output and help: held is not refused; every option explained."""

from __future__ import annotations

from controller.engine.loop import PassResult
from tests.unit.test_metrics import controller


def test_runs_output_tells_held_from_refused() -> None:
    """A patch waiting on the scheduler's preview or a cooldown is held, not refused."""
    from controller.app.run import summarize
    from controller.engine.decide import Decision
    from controller.engine.guard import Verdict
    from controller.model.actions import SetProperty

    def prop(name: str, verdict: Verdict) -> Decision:
        return Decision(SetProperty(name=name, value="x", reconciler="properties", why="w"),
                        verdict)

    result = PassResult((prop("a", Verdict(False, "previewing", "the preview is running")),
                         prop("b", Verdict(False, "no-quorum", "no quorum"))), ())
    text = summarize(result, controller())
    assert "0 applied, 1 refused, 1 held" in text
    assert "    held    property a=x: previewing: the preview is running" in text
    assert "    refused property b=x: no-quorum: no quorum" in text


def test_every_option_of_every_command_says_what_it_does_and_its_default() -> None:
    import argparse

    from controller.app.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    silent = [(name, a.dest) for name, sp in commands.choices.items() for a in sp._actions
              if a.dest != "help" and not a.help]
    assert silent == []
    agent = commands.choices["agent"].format_help()
    assert "(default: tcp://127.0.0.1:9820)" in " ".join(agent.split())


def test_plan_says_a_placement_not_met_yet_is_pending_not_that_nothing_is_to_do() -> None:
    """Issue "Day one", 8: the first `plan` after an edit hid an unmet placement for 15 s."""
    from controller.app.plan import render_plan
    from controller.model.actions import Finding

    f = Finding(reconciler="placement", kind="placement-unsatisfiable", severity="warning",
                subject="vm-web01", rsc="vm-web01",
                message="web01 prefers kvm3, Pacemaker runs it on kvm1 (kvm3: -INFINITY)")
    text = render_plan((), (), set(), ((f, 4.2),))
    assert "Nothing to do" not in text
    assert "vm-web01: pending (4 s): web01 prefers kvm3" in text
    assert render_plan((), (), set()) == "Nothing to do: the cluster matches the desired state."
