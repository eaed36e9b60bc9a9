"""Cluster properties: the file's values become crm_config nvpairs, in Pacemaker's own words."""

from __future__ import annotations

from controller.model.actions import SetProperty
from reconcilers import properties
from tests.unit.clusters import ctx, index


def test_a_missing_property_is_set_with_the_reason() -> None:
    plan = properties.plan(ctx(index({}), "version: 1\ncluster:\n  properties: {no-quorum-policy: freeze}\n"))
    (a,) = plan.actions
    assert isinstance(a, SetProperty) and (a.name, a.value) == ("no-quorum-policy", "freeze")
    assert "(unset)" in a.why


def test_pacemaker_synonyms_for_true_are_not_drift() -> None:
    # crm_is_true(): yes, y, on, 1 and true are all true for Pacemaker.
    for word in ("yes", "y", "on", "1", "TRUE"):
        idx = index({}, properties={"symmetric-cluster": word})
        plan = properties.plan(ctx(idx, "version: 1\ncluster:\n  properties: {symmetric-cluster: 'true'}\n"))
        assert plan.actions == (), word


def test_enabling_stonith_without_a_device_is_a_critical_finding_not_an_action() -> None:
    plan = properties.plan(ctx(index({}), "version: 1\ncluster:\n  properties: {stonith-enabled: 'true'}\n"))
    assert plan.actions == ()
    (f,) = plan.findings
    assert (f.kind, f.severity) == ("stonith-without-device", "critical")


def test_an_incremental_pass_leaves_cluster_properties_alone() -> None:
    c = ctx(index({}), "version: 1\ncluster:\n  properties: {no-quorum-policy: freeze}\n",
            scope=frozenset({"web01"}))
    assert properties.plan(c).actions == ()
