"""Nodes: a declared state is kept through node attributes; plain names declare none."""

from __future__ import annotations

from controller.model.actions import Plan, SetNodeAttribute, SetProperty
from controller.model.observed import Node
from reconcilers import nodes
from tests.unit.clusters import NODES, ctx, index


def attrs(plan: Plan) -> set[tuple[str, str, str]]:
    return {(a.node, a.name, a.value) for a in plan.actions if isinstance(a, SetNodeAttribute)}


def test_plain_names_never_change_a_node_an_operator_put_in_standby() -> None:
    by_hand = {**NODES, "kvm3": Node(name="kvm3", online=True, standby=True)}
    plan = nodes.plan(ctx(index({}, nodes=by_hand),
                          "version: 1\ncluster:\n  nodes: [kvm1, kvm2, kvm3]\n"))
    assert plan.actions == ()


def test_standby_sets_the_attribute_and_the_migration_limit() -> None:
    plan = nodes.plan(ctx(index({"a": "kvm3"}),
                          "version: 1\ncluster:\n  nodes: [kvm1, kvm2, {name: kvm3, state: standby}]\n"
                          "policy: {max_concurrent_migrations: 3}\n"))
    assert attrs(plan) == {("kvm3", "standby", "on")}
    props = [(a.name, a.value) for a in plan.actions if isinstance(a, SetProperty)]
    assert props == [("migration-limit", "3")]


def test_maintenance_and_back_online() -> None:
    plan = nodes.plan(ctx(index({}), "version: 1\ncluster:\n  nodes: [{name: kvm2, state: maintenance}]\n"))
    assert attrs(plan) == {("kvm2", "maintenance", "on")}
    in_maintenance = {**NODES, "kvm2": Node(name="kvm2", online=True, maintenance=True)}
    plan = nodes.plan(ctx(index({}, nodes=in_maintenance),
                          "version: 1\ncluster:\n  nodes: [{name: kvm2, state: online}]\n"))
    assert attrs(plan) == {("kvm2", "maintenance", "off")}


def test_a_drain_whose_vm_may_go_nowhere_else_is_a_finding_and_not_started() -> None:
    plan = nodes.plan(ctx(index({"a": "kvm3"}), """version: 1
cluster:
  nodes: [kvm1, kvm2, {name: kvm3, state: standby}]
vms:
  - name: a
    placement: {allowed: [kvm3]}
"""))
    assert attrs(plan) == set()
    (f,) = plan.findings
    assert (f.kind, f.severity, f.subject) == ("drain-blocked", "critical", "kvm3")


def test_the_drains_migration_limit_is_put_back_when_the_drain_ends() -> None:
    """Issue "Day one", 4: kvm-warden leaves only the properties the file names."""
    import dataclasses

    from controller.engine.ledger import Ledger

    ledger = Ledger()
    drain = nodes.plan(ctx(index({"a": "kvm3"}, properties={"migration-limit": "5"}),
                           "version: 1\ncluster:\n  nodes: [kvm1, kvm2, {name: kvm3, state: "
                           "standby}]\npolicy: {max_concurrent_migrations: 2}\n"))
    (setting,) = [a for a in drain.actions if isinstance(a, SetProperty)]
    assert (setting.value, setting.previous, setting.saves) == ("2", "5", True)
    assert "5 again when the drain ends" in setting.why
    ledger.record(setting, True, index({}), 100.0)
    after = ctx(index({"a": "kvm1"}, properties={"migration-limit": "2"}),
                "version: 1\ncluster:\n  nodes: [kvm1, kvm2, {name: kvm3, state: online}]\n"
                "policy: {max_concurrent_migrations: 2}\n")
    back = nodes.plan(dataclasses.replace(after, ledger=ledger.view()))
    (restore,) = [a for a in back.actions if isinstance(a, SetProperty)]
    assert (restore.name, restore.value, restore.restores) == ("migration-limit", "5", True)
    ledger.record(restore, True, index({}), 200.0)
    assert ledger.view().saved_properties == {}
    # Changed by someone else since: not ours to put back.
    ledger.record(setting, True, index({}), 300.0)
    moved = ctx(index({"a": "kvm1"}, properties={"migration-limit": "7"}),
                "version: 1\ncluster:\n  nodes: [kvm1, kvm2, kvm3]\n")
    assert not nodes.plan(dataclasses.replace(moved, ledger=ledger.view())).actions
