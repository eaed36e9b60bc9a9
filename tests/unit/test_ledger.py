"""The ledger remembers outcomes, not admissions: a refused action spends nothing."""

from __future__ import annotations

from pathlib import Path

from controller.engine.guard import COOLDOWN_SECONDS, Guard
from controller.engine.ledger import FINDING_PERSIST_SECONDS, Ledger
from controller.model.actions import Cleanup, Finding, SetProperty
from controller.model.desired import Policy
from tests.unit.clusters import index

PROP = SetProperty(reconciler="properties", why="t", name="no-quorum-policy", value="freeze")


def test_an_applied_action_starts_its_cooldown_and_a_failed_one_too() -> None:
    idx = index({})
    for applied in (True, False):
        g = Guard()
        g.ledger.record(PROP, applied, idx, 100.0)
        assert g.admit(PROP, idx, Policy(), 100.0 + COOLDOWN_SECONDS / 2, None).reason == "cooldown"


def test_deciding_alone_spends_nothing() -> None:
    from controller.engine.decide import decide
    from controller.model.desired import parse_desired

    g = Guard()
    desired = parse_desired("version: 1\ncluster:\n  properties: {no-quorum-policy: freeze}\n")
    decisions, _ = decide(index({}), desired, g, 100.0, 100.0)
    assert [d.verdict.reason for d in decisions] == ["admitted"]
    # Nothing was applied: the next pass admits the same action again (no cooldown spent).
    decisions, _ = decide(index({}), desired, g, 101.0, 101.0)
    assert [d.verdict.reason for d in decisions] == ["admitted"]


def test_only_an_applied_cleanup_enters_the_cleanup_history() -> None:
    ledger, idx = Ledger(), index({"web01": "kvm1"})
    c = Cleanup(reconciler="health", why="t", rsc="vm-web01", node="kvm2")
    ledger.record(c, False, idx, 10.0)
    assert ledger.view().cleanups.attempts == {}
    ledger.record(c, True, idx, 20.0)
    assert ledger.view().cleanups.attempts == {"vm-web01@kvm2": (20.0,)}


def test_placement_findings_count_once_they_persist() -> None:
    ledger = Ledger()
    f = Finding(reconciler="health", kind="split-brain", severity="critical", subject="vm-web01",
                message="split brain? domain web01 runs on kvm1, kvm2")
    other = Finding(reconciler="inventory", kind="unknown-node", severity="warning",
                    subject="vm-web01", message="VM web01: node 'kvm9' is not a cluster node")
    assert ledger.persistent((f, other), 0.0) == ((other,), ((f, 0.0),))  # f: pending
    assert ledger.persistent((f, other), FINDING_PERSIST_SECONDS)[0] == (f, other)
    assert ledger.persistent((other,), FINDING_PERSIST_SECONDS + 1)[0] == (other,)  # resolved: forgotten
    assert ledger.persistent((f,), FINDING_PERSIST_SECONDS + 2) == ((), ((f, 0.0),))


def test_a_reworded_finding_keeps_its_timer() -> None:
    """Timers are keyed by (kind, subject): rewording a message resets nothing."""
    import msgspec

    ledger = Ledger()
    f = Finding(reconciler="health", kind="split-brain", severity="critical", subject="vm-web01",
                message="split brain? domain web01 runs on kvm1, kvm2")
    ledger.persistent((f,), 0.0)
    reworded = msgspec.structs.replace(f, message="web01 runs on two nodes: kvm1 and kvm2")
    assert ledger.persistent((reworded,), FINDING_PERSIST_SECONDS)[0] == (reworded,)


def test_the_ledger_survives_a_restart_limits_breakers_and_timers_included(tmp_path: Path) -> None:
    from controller.engine.ledger import LedgerFile

    idx = index({"web01": "kvm1"})
    ledger = Ledger()
    ledger.record(PROP, True, idx, 100.0)
    for k in range(5):  # five cleanups within the breaker's window: the circuit is open
        ledger.record(Cleanup(reconciler="health", why="t", rsc="vm-web01", node="kvm1"), True,
                      idx, 100.0 + k)
    ledger.finding_since[("vm-web01", "split brain? x")] = 90.0
    LedgerFile(tmp_path).save(ledger, 105.0)

    restarted = Guard(LedgerFile(tmp_path).load())  # a new process, maybe on another node
    assert restarted.admit(PROP, idx, Policy(), 105.0, None).reason == "cooldown"
    assert len(restarted.ledger.view().cleanups.attempts["vm-web01@kvm1"]) == 5
    assert restarted.ledger.finding_since == {("vm-web01", "split brain? x"): 90.0}


def test_a_corrupt_ledger_is_reported_set_aside_and_replaced(tmp_path: Path) -> None:
    from controller.engine.ledger import LedgerFile
    from controller.metrics import REGISTRY

    before = REGISTRY.get_sample_value("kvm_warden_ledger_errors_total") or 0.0
    for garbage in (b"{not json", b'{"version": 1, "moves": "x"}', b"\xff\xfe"):
        (tmp_path / "ledger.json").write_bytes(garbage)
        assert LedgerFile(tmp_path).load() == Ledger()
        assert (tmp_path / "ledger.json.corrupt").read_bytes() == garbage
    assert REGISTRY.get_sample_value("kvm_warden_ledger_errors_total") == before + 3
    LedgerFile(tmp_path).save(Ledger(last_change={"property:x": 1.0}), 2.0)
    assert LedgerFile(tmp_path).load().last_change == {"property:x": 1.0}


def test_a_move_of_a_resource_gone_from_the_cluster_is_not_in_flight() -> None:
    """Found on the lab: a retired VM's recorded move held the migration ceiling for five
    minutes, and a drain (max_concurrent_migrations: 1) waited behind it."""
    ledger = Ledger()
    ledger.moves = {"vm-web03": 1000.0, "vm-db01": 1000.0}
    idx = index({"db01": None})  # db01 exists, runs nowhere yet (a move not settled)
    assert ledger.migrations_in_flight(idx, 1010.0) == {"vm-db01"}
    assert ledger.moves == {"vm-db01": 1000.0}


def test_marks_that_are_not_cooldowns_are_typed_and_survive_a_restart(tmp_path: Path) -> None:
    """Issue "One observation", 3: the once-per-pause mark and the rollback hold have fields
    of their own (never told apart from cooldowns by a key's prefix), and a file written by the
    previous version (marks among the cooldowns) keeps both memories."""
    import json

    from controller.engine.ledger import LedgerFile
    from controller.model.actions import FailResource, RemoveVm

    ledger = Ledger()
    ledger.spend(FailResource(reconciler="paused", rsc="vm-web01", node="kvm1", why="x"),
                 index({"web01": "kvm1"}), 100.0)
    ledger.spend(RemoveVm(reconciler="enroll", rsc="vm-web03", rollback=True, why="x"),
                 index({"web01": "kvm1"}), 101.0)
    ledger.spend(SetProperty(reconciler="properties", name="x", value="1", why="x"),
                 index({}), 102.0)
    view = ledger.view()
    assert view.failed_at == {("vm-web01", "kvm1"): 100.0}
    assert view.rolled_back == {"vm-web03": 101.0}
    LedgerFile(tmp_path).save(ledger, 103.0)
    again = LedgerFile(tmp_path).load().view()
    assert again.failed_at == view.failed_at and again.rolled_back == view.rolled_back
    # version 1: the marks were cooldown keys
    path = next(tmp_path.glob("*.json"))
    path.write_text(json.dumps({"version": 1, "last_change": {
        "fail:vm-db01:kvm2": 50.0, "rollback:vm-web04": 60.0, "property:x": 70.0}}))
    old = LedgerFile(tmp_path).load()
    assert old.view().failed_at == {("vm-db01", "kvm2"): 50.0}
    assert old.view().rolled_back == {"vm-web04": 60.0}
    assert old.last_change["property:x"] == 70.0
