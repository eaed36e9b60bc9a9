"""The web view's edits of the desired file: the change asked for, every other byte kept."""

from __future__ import annotations

import difflib

import pytest

from controller.app.edits import EditError, NodeState, Place, Retire, RunState, edit_text
from controller.model.desired import parse_desired
from tests.cibs import EXAMPLE


def changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


TEXT = EXAMPLE.read_text()


def test_placement_is_one_line_and_the_comments_stay() -> None:
    new = edit_text(TEXT, Place(vm="web01", node="kvm1"))
    assert changed_lines(TEXT, new) == [
        "-      prefer: kvm2                       # soft: preferred node",
        "+      prefer: kvm1                       # soft: preferred node"]
    assert parse_desired(new).vm_by_name()["web01"].placement.prefer == "kvm1"


def test_every_edit_changes_only_its_lines_and_validates() -> None:
    compact = ("version: 1\n# the lab\ncluster:\n  nodes: [kvm1, kvm2, kvm3]   # all of them\n"
               "vms:\n  - name: a   # web\n    placement: {prefer: kvm1}\n  - name: b\n")
    cases = [
        (Place(vm="b", node="kvm3"), ["+    placement: {prefer: kvm3}"]),
        (Place(vm="a"), ["-    placement: {prefer: kvm1}"]),
        (RunState(vm="a", state="stopped"), ["+    state: stopped"]),
        (NodeState(node="kvm2", state="standby"),
         ["-  nodes: [kvm1, kvm2, kvm3]   # all of them",
          "+  nodes: [kvm1, {name: kvm2, state: standby}, kvm3] # all of them"]),  # same line
        (Retire(vm="b", keep_running=True), ["+    state: absent", "+    keep_running: true"]),
    ]
    for edit, want in cases:
        new = edit_text(compact, edit)
        assert changed_lines(compact, new) == want, edit
        parse_desired(new)
    # and back: a drained node lifted is the plain name again
    drained = edit_text(compact, NodeState(node="kvm2", state="standby"))
    lifted = changed_lines(compact, edit_text(drained, NodeState(node="kvm2", state="online")))
    # the same line again (ruamel.yaml realigns the comment of the line it rewrote)
    assert [" ".join(line.split()) for line in lifted] == [
        "- nodes: [kvm1, kvm2, kvm3] # all of them", "+ nodes: [kvm1, kvm2, kvm3] # all of them"]
    assert edit_text(compact, RunState(vm="b", state="running")) == compact  # the default


def test_edits_that_cannot_be_made_say_why() -> None:
    with pytest.raises(EditError, match="no VM 'nosuch'"):
        edit_text(TEXT, Place(vm="nosuch", node="kvm1"))
    with pytest.raises(EditError, match="not a VM or node name"):
        edit_text(TEXT, Place(vm="a;rm -rf", node="kvm1"))
    with pytest.raises(EditError, match="lists no cluster.nodes"):
        edit_text("version: 1\nvms: []\n", NodeState(node="kvm1", state="standby"))
