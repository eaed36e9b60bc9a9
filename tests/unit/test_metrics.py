"""Observability that can fail: readiness, the last-pass mark, per-node probe freshness."""

from __future__ import annotations

import time

from controller import metrics
from controller.app.run import ready_state
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller, PassResult, Published
from controller.engine.observe import Reading
from controller.metrics import REGISTRY
from controller.model.actions import Finding
from controller.model.desired import parse_desired
from controller.model.errors import ToolError
from controller.model.observed import ObservedState
from controller.model.overview import VmRow


def controller(source=None) -> Controller:  # type: ignore[no-untyped-def]
    def failing() -> Reading:
        raise ToolError(["crm_mon"], "exited with status 102")

    ctl = Controller(source=source or failing, actuator=None,  # type: ignore[arg-type]
                     desired=DesiredStore(None, parse_desired("version: 1\n")))
    ctl.desired.poll()
    return ctl


def test_readyz_uses_the_end_of_the_last_good_pass_not_the_clock() -> None:
    ctl = controller()
    ctl.view = Published(last=PassResult((), (), finished_at=time.time() - 1000))
    ok, why = ready_state(ctl)
    assert not ok and "ago" in why
    ctl.view = Published(last=PassResult((), (), finished_at=time.time()))
    assert ready_state(ctl) == (True, "ready")


def test_a_failed_pass_does_not_move_the_last_pass_mark() -> None:
    metrics.LAST_PASS.set(123.0)
    result = controller().run_pass()
    assert result.error is not None and "crm_mon" in result.error
    assert REGISTRY.get_sample_value("kvm_warden_last_pass_timestamp_seconds") == 123.0
    assert ready_state(controller())[0] is False


def test_probe_freshness_is_one_series_per_node() -> None:
    metrics.update_cluster(ObservedState(observed_at={"libvirt:kvm1": 10.0,
                                                      "libvirt:kvm2": 20.0, "pacemaker": 30.0}))
    got = {(s.labels["probe"], s.labels["node"]): s.value
           for m in REGISTRY.collect() if m.name == "kvm_warden_probe_last_success_timestamp_seconds"
           for s in m.samples}
    assert got[("libvirt", "kvm1")] == 10.0 and got[("libvirt", "kvm2")] == 20.0
    assert got[("pacemaker", "")] == 30.0


def test_storage_clones_are_not_vms_in_the_failcount_series() -> None:
    row = VmRow(vm="web01", resource="vm-web01", nodes=("kvm1",), state="Started",
                desired_state=None, desired_node=None, drift=(), vnc_port=None, console=None)
    metrics.update_vms([row], {("vm-web01", "kvm2"): 2, ("dlm", "kvm3"): 1})
    text = metrics.render().decode()
    assert 'kvm_warden_vm_failcount{node="kvm2",vm="web01"} 2.0' in text
    assert 'vm="dlm"' not in text


def test_the_ban_metric_names_the_files_vm_not_the_naming_convention() -> None:
    # The file's entry `name: db01, resource: pg-primary`: the resource id says nothing of it.
    ban = Finding(reconciler="placement", kind="operator-ban", severity="warning",
                  subject="pg-primary@kvm3", rsc="pg-primary", node="kvm3", message="...")
    metrics.update_findings([ban], {"pg-primary": "db01"})
    assert REGISTRY.get_sample_value("kvm_warden_operator_ban",
                                     {"vm": "db01", "node": "kvm3"}) == 1.0
    assert REGISTRY.get_sample_value("kvm_warden_operator_ban",
                                     {"vm": "pg-primary", "node": "kvm3"}) is None
