"""Cluster properties: the file's values become crm_config nvpairs, in Pacemaker's own words."""

from __future__ import annotations

from controller.model.actions import SetProperty
from controller.model.index import ClusterIndex
from controller.model.observed import ResourceConfig
from reconcilers import properties
from reconcilers.all import plan_all
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
    """Cluster-wide: the engine runs it on full passes only (reconcilers/all.runs)."""
    text = "version: 1\ncluster:\n  properties: {no-quorum-policy: freeze}\n"
    c = ctx(index({}), text, scope=frozenset({"web01"}))
    assert not any(isinstance(a, SetProperty) for a in plan_all(c).actions)
    assert any(isinstance(a, SetProperty) for a in plan_all(ctx(index({}), text)).actions)


def _fenced(props: dict[str, str]) -> ClusterIndex:
    """A cluster with a fence device and these properties in crm_config."""
    idx = index({}, properties=props)
    idx.configured["fence-kvm"] = ResourceConfig(id="fence-kvm", kind="primitive",
                                                 agent="stonith:fence_dummy")
    return idx


def test_pacemaker_3_0_2s_new_name_wins_and_drift_is_judged_on_it() -> None:
    """Issue "Current Debian", 4: on a CIB in 3.0.2's form, an operator's fencing-enabled=false
    wins over stonith-enabled=true: that is drift, and kvm-warden sets the name that wins (and
    the older one only if it differs); fencing-enabled=true alone is no drift."""
    desired = "version: 1\ncluster:\n  properties: {stonith-enabled: 'true'}\n"
    idx = _fenced({"stonith-enabled": "true", "fencing-enabled": "false"})
    (a,) = properties.plan(ctx(idx, desired)).actions
    assert isinstance(a, SetProperty) and (a.name, a.value) == ("fencing-enabled", "true")
    assert "cluster has false" in a.why
    for props in ({"fencing-enabled": "true"}, {"fencing-enabled": "yes", "stonith-enabled": "no"}):
        assert properties.plan(ctx(_fenced(props), desired)).actions == ()


def test_the_older_name_is_written_where_the_new_one_is_not_set() -> None:
    """A cluster that has never set 3.0.2's name (or runs an older Pacemaker) gets the name
    every version reads, whichever name the file uses."""
    for file_name in ("stonith-enabled", "fencing-enabled"):
        desired = f"version: 1\ncluster:\n  properties: {{{file_name}: 'true'}}\n"
        (a,) = properties.plan(ctx(_fenced({"stonith-enabled": "false"}), desired)).actions
        assert isinstance(a, SetProperty) and (a.name, a.value) == ("stonith-enabled", "true")
    plan = properties.plan(ctx(index({}), "version: 1\ncluster:\n  properties: "
                                          "{fencing-enabled: 'true'}\n"))
    assert [f.kind for f in plan.findings] == ["stonith-without-device"]


def test_the_web_view_reads_fencing_as_pacemaker_does() -> None:
    from controller.model.pcmk import fencing_enabled
    assert fencing_enabled({}) is True
    assert fencing_enabled({"stonith-enabled": "true", "fencing-enabled": "false"}) is False
    assert fencing_enabled({"stonith-enabled": "false"}) is False
    assert fencing_enabled({"fencing-enabled": "on", "stonith-enabled": "false"}) is True
