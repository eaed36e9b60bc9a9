"""The web view's edits of the desired file: the change asked for, every other byte kept."""

from __future__ import annotations

import difflib

import pytest

from controller.app.edits import (
    CleanFailures,
    EditError,
    Enroll,
    NodeState,
    Place,
    Retire,
    RunState,
    completed,
    edit_text,
    suggest_enrollment,
)
from controller.model.desired import parse_desired
from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    Domain,
    ObservedState,
    ResourceConfig,
)
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
        (completed(CleanFailures(vm="a"), 1796205600.0),
         ["+    clean_failures_before: '2026-12-02T10:00:00Z'"]),
    ]
    for edit, want in cases:
        new = edit_text(compact, edit)
        assert changed_lines(compact, new) == want, edit
        parse_desired(new)
    # and back: "bring online" declares the state (a plain name declares none, and would
    # leave the node in standby: issue "Day one", 1)
    drained = edit_text(compact, NodeState(node="kvm2", state="standby"))
    lifted = changed_lines(compact, edit_text(drained, NodeState(node="kvm2", state="online")))
    # the same line again (ruamel.yaml realigns the comment of the line it rewrote)
    assert [" ".join(line.split()) for line in lifted] == [
        "- nodes: [kvm1, kvm2, kvm3] # all of them",
        "+ nodes: [kvm1, {name: kvm2, state: online}, kvm3] # all of them"]
    assert parse_desired(edit_text(drained, NodeState(node="kvm2", state="online"))
                         ).cluster.node_states() == {"kvm2": "online"}
    assert edit_text(compact, RunState(vm="b", state="running")) == compact  # the default


def test_edits_that_cannot_be_made_say_why() -> None:
    with pytest.raises(EditError, match="no VM 'nosuch'"):
        edit_text(TEXT, Place(vm="nosuch", node="kvm1"))
    with pytest.raises(EditError, match="not a VM or node name"):
        edit_text(TEXT, Place(vm="a;rm -rf", node="kvm1"))
    with pytest.raises(EditError, match="not a time as the review writes it"):
        edit_text(TEXT, CleanFailures(vm="web01", before="2026-12-02T10:00:00Z\nstate: x"))
    with pytest.raises(EditError, match="not a time as the review writes it"):
        edit_text(TEXT, CleanFailures(vm="web01"))  # not completed by a review
    with pytest.raises(EditError, match="lists no cluster.nodes"):
        edit_text("version: 1\nvms: []\n", NodeState(node="kvm1", state="standby"))


def _cluster(on: tuple[str, ...], configs: dict[str, str]) -> ObservedState:
    """web03 running on `on`; VirtualDomain resources with these (config, transport) params."""
    return ObservedState(
        status=ClusterStatus(),
        cib=CibConfig(resources={rid: ResourceConfig(
            id=rid, kind="primitive", agent="ocf:heartbeat:VirtualDomain",
            params={"config": cfg, "migration_transport": "tcp"})
            for rid, cfg in configs.items()}),
        domains={n: {"web03": Domain(name="web03", state="running")} for n in on})


def test_an_enrollment_is_suggested_from_the_cluster_or_says_what_is_missing() -> None:
    desired = parse_desired(TEXT)  # storage gfs2_storage on /kvm/storage
    got = suggest_enrollment(Enroll(vm="web03"), _cluster(("kvm2",), {
        "vm-a": "/kvm/storage/xml/a.xml", "vm-b": "/kvm/storage/xml/b.xml",
        "vm-c": "/etc/pacemaker/c.xml"}), desired)
    # beside the others on shared storage (not /etc), their transport, where it runs
    assert got == Enroll(vm="web03", config="/kvm/storage/xml/web03.xml",
                         migration_transport="tcp", storage="gfs2_storage", prefer="kvm2")
    new = edit_text(TEXT, got)
    assert parse_desired(new).vm_by_name()["web03"].config == "/kvm/storage/xml/web03.xml"
    with pytest.raises(EditError, match="runs on kvm1, kvm2"):
        suggest_enrollment(Enroll(vm="web03"), _cluster(("kvm1", "kvm2"), {}), desired)
    with pytest.raises(EditError, match="no directory of domain XML on declared storage"):
        suggest_enrollment(Enroll(vm="web03"), _cluster(("kvm2",), {
            "vm-c": "/etc/pacemaker/c.xml"}), desired)
    with pytest.raises(EditError, match="in the desired file already"):
        suggest_enrollment(Enroll(vm="web01"), _cluster(("kvm2",), {}), desired)
