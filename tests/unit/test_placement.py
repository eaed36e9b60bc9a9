"""Placement: prefer/allowed/anti-affinity become location and colocation constraints kvm-warden owns."""

from __future__ import annotations

from controller.model.actions import AddColocation, RemoveConstraint, SetAllowedNodes, SetLocation
from controller.model.observed import LocationConstraint
from reconcilers import placement
from tests.unit.clusters import ctx, index


def test_prefer_is_a_location_preference_with_the_policy_score() -> None:
    plan = placement.plan(ctx(index({"web01": "kvm1"}),
                              "version: 1\nvms:\n  - name: web01\n    placement: {prefer: kvm2}\n"))
    (a,) = plan.actions
    assert isinstance(a, SetLocation)
    assert (a.id, a.rsc, a.node, a.score) == ("warden-prefer-vm-web01", "vm-web01", "kvm2", "1000")


def test_allowed_nodes_and_anti_affinity() -> None:
    plan = placement.plan(ctx(index({"web01": "kvm1", "web02": "kvm2"}), """version: 1
vms:
  - name: web01
    placement: {allowed: [kvm1, kvm2]}
  - name: web02
    anti_affinity: [web01]
"""))
    allowed = [a for a in plan.actions if isinstance(a, SetAllowedNodes)]
    anti = [a for a in plan.actions if isinstance(a, AddColocation)]
    assert [(a.rsc, a.nodes) for a in allowed] == [("vm-web01", ("kvm1", "kvm2"))]
    assert [(sorted((a.rsc, a.with_rsc)), a.score) for a in anti] == [(["vm-web01", "vm-web02"], "-INFINITY")]


def test_a_foreign_location_constraint_is_never_removed() -> None:
    foreign = LocationConstraint(id="location-web01-kvm3", rsc="vm-web01", node="kvm3", score="50")
    plan = placement.plan(ctx(index({"web01": "kvm1"}, location=(foreign,)),
                              "version: 1\nvms:\n  - name: web01\n"))
    assert not [a for a in plan.actions if isinstance(a, RemoveConstraint)]


def test_an_owned_preference_nobody_asks_for_any_more_is_removed_on_a_full_pass_only() -> None:
    owned = LocationConstraint(id="warden-prefer-vm-web01", rsc="vm-web01", node="kvm2",
                               score="1000")
    desired = "version: 1\nvms:\n  - name: web01\n"
    full = placement.plan(ctx(index({"web01": "kvm1"}, location=(owned,)), desired))
    assert [a.id for a in full.actions if isinstance(a, RemoveConstraint)] == ["warden-prefer-vm-web01"]
    scoped = placement.plan(ctx(index({"web01": "kvm1"}, location=(owned,)), desired,
                                scope=frozenset({"web01"})))
    assert not [a for a in scoped.actions if isinstance(a, RemoveConstraint)]


def test_a_typo_in_a_vm_name_keeps_its_anti_affinity_and_preference_and_says_why() -> None:
    """Issue "Day one", 2: web02 renamed web2 by mistake. Its resource still runs, so nothing
    proves its safety is no longer wanted: the constraints stay, and a finding names the
    likely typo. Anchor: Argo CD does not prune by default."""
    from controller.model.observed import ColocationConstraint
    from reconcilers import inventory

    anti = ColocationConstraint(id="warden-anti-vm-web01-vm-web02", rsc="vm-web01",
                                with_rsc="vm-web02", score="-INFINITY")
    prefer = LocationConstraint(id="warden-prefer-vm-web02", rsc="vm-web02", node="kvm2",
                                score="1000")
    cluster = index({"web01": "kvm1", "web02": "kvm2"}, location=(prefer,), colocation=(anti,))
    typo = """version: 1
vms:
  - name: web01
  - name: web2
    placement: {prefer: kvm2}
    anti_affinity: [web01]
"""
    plan = placement.plan(ctx(cluster, typo))
    assert not [a for a in plan.actions if isinstance(a, RemoveConstraint)]
    (f,) = [f for f in plan.findings if f.kind == "vm-undeclared"]
    assert f.rsc == "vm-web02" and "did you mean 'web2'?" in f.message
    assert "warden-anti-vm-web01-vm-web02" in f.message and "warden-prefer-vm-web02" in f.message
    (missing,) = [f for f in inventory.plan(ctx(cluster, typo)).findings
                  if f.kind == "missing-resource"]
    assert "did you mean 'web02'?" in missing.message
    # Retired on purpose (state: absent), the VM is named: nothing is kept for it here.
    retired = placement.plan(ctx(cluster, typo.replace("name: web2\n", "name: web02\n    state: absent\n")))
    assert not [f for f in retired.findings if f.kind == "vm-undeclared"]


def test_an_owned_constraint_of_a_resource_that_is_gone_is_removed() -> None:
    prefer = LocationConstraint(id="warden-prefer-vm-web02", rsc="vm-web02", node="kvm2",
                                score="1000")
    plan = placement.plan(ctx(index({"web01": "kvm1"}, location=(prefer,)),
                              "version: 1\nvms:\n  - name: web01\n"))
    assert [a.id for a in plan.actions if isinstance(a, RemoveConstraint)] == [
        "warden-prefer-vm-web02"]
