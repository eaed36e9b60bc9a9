"""Run state: `state: running|stopped` is the resource's target-role (Pacemaker's default: Started)."""

from __future__ import annotations

from controller.model.actions import SetMeta
from reconcilers import run_state
from tests.unit.clusters import ctx, index

VMS = "version: 1\nvms:\n  - name: web01\n    state: {state}\n"


def test_stopped_sets_target_role_stopped() -> None:
    (a,) = run_state.plan(ctx(index({"web01": "kvm1"}), VMS.format(state="stopped"))).actions
    assert isinstance(a, SetMeta) and (a.rsc, a.name, a.value) == ("vm-web01", "target-role", "Stopped")


def test_running_with_no_target_role_is_already_right() -> None:
    assert run_state.plan(ctx(index({"web01": "kvm1"}), VMS.format(state="running"))).actions == ()


def test_running_after_a_stop_sets_started() -> None:
    idx = index({"web01": None}, meta={"web01": {"target-role": "Stopped"}})
    (a,) = run_state.plan(ctx(idx, VMS.format(state="running"))).actions
    assert isinstance(a, SetMeta) and a.value == "Started"


def test_a_vm_without_a_resource_is_left_to_the_inventory() -> None:
    assert run_state.plan(ctx(index({}), VMS.format(state="stopped"))).actions == ()
