"""Observability that can fail: readiness, the last-pass mark, per-node probe freshness."""

from __future__ import annotations

import platform
import socket
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
from controller.model.observed import ObservedState, SourceKey
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
    metrics.update_cluster(ObservedState(observed_at={
        SourceKey("libvirt", "kvm1"): 10.0, SourceKey("libvirt", "kvm2"): 20.0,
        SourceKey("pacemaker"): 30.0}))
    got = {(s.labels["probe"], s.labels["node"]): s.value
           for m in REGISTRY.collect() if m.name == "kvm_warden_probe_last_success_timestamp_seconds"
           for s in m.samples}
    assert got[("libvirt", "kvm1")] == 10.0 and got[("libvirt", "kvm2")] == 20.0
    # Pacemaker is read where the controller runs: that node, never an empty label.
    assert got[("pacemaker", socket.gethostname())] == 30.0
    assert all(node for _, node in got)


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


def test_a_migration_makes_no_new_series_and_out_of_band_counters_start_at_zero() -> None:
    """Per-VM series keep their labels: where a VM runs and its health are values."""
    def row(node: str, health: str) -> VmRow:
        return VmRow(vm="web01", resource="vm-web01", nodes=(node,), state="Started",
                     desired_state=None, desired_node="kvm2", drift=(), vnc_port=5901,
                     console=None, health=health)

    def series() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for m in [*REGISTRY.collect(), *metrics.VM_REGISTRY.collect()]
                if m.name.startswith(("kvm_warden_vm_", "kvm_warden_out_of_band"))
                for s in m.samples if s.labels.get("vm") == "web01"}

    nodes = ("kvm1", "kvm2", "kvm3")
    metrics.update_vms([row("kvm1", "ok")], {}, nodes)
    before = series()
    metrics.update_vms([row("kvm2", "migrating")], {}, nodes)
    after = series()
    assert before.keys() == after.keys()  # the same series, other values
    value = lambda s, name, **labels: s[(name, tuple(sorted({"vm": "web01", **labels}.items())))]  # noqa: E731
    assert value(before, "kvm_warden_vm_node", node="kvm1") == 1.0
    assert value(after, "kvm_warden_vm_node", node="kvm1") == 0.0
    assert value(after, "kvm_warden_vm_node", node="kvm2") == 1.0
    assert value(after, "kvm_warden_vm_health", health="migrating") == 1.0
    assert value(after, "kvm_warden_vm_health", health="ok") == 0.0
    assert value(after, "kvm_warden_vm_desired_node", node="kvm2") == 1.0
    assert value(after, "kvm_warden_vm_vnc_port") == 5901.0
    assert value(after, "kvm_warden_vm_info", resource="vm-web01") == 1.0
    for node in nodes:  # there before the first out-of-band change, at 0
        assert value(after, "kvm_warden_out_of_band_total", node=node) == 0.0


def test_build_info_names_the_version_and_the_debian_release() -> None:
    from pathlib import Path

    from controller.version import version

    release = Path("/etc/debian_version").read_text().split(".")[0]
    assert REGISTRY.get_sample_value("kvm_warden_build_info", {
        "version": version(), "python": platform.python_version(), "debian": release}) == 1.0

