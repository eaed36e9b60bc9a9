"""Paused VMs: reported past the grace, never while Pacemaker migrates them; `restart` goes
through Pacemaker (crm_resource --fail), never virsh."""

from __future__ import annotations

from controller.model.actions import FailResource
from controller.model.context import Context, LedgerView
from controller.model.desired import parse_desired
from controller.model.index import build_index
from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    Domain,
    Node,
    ObservedState,
    Resource,
    ResourceConfig,
)
from controller.model.vms import cluster_vms
from reconcilers import paused

NODES = {n: Node(name=n, online=True) for n in ("kvm1", "kvm2")}


def ctx(reason: str, since: float, now: float, on_pause: str = "report", role: str = "Started",
        grace: int = 2, failed_at: float | None = None) -> Context:
    desired = parse_desired(f"version: 1\nvms:\n  - name: web01\npolicy:\n  on_pause: {on_pause}\n"
                            f"  pause_grace_seconds: {grace}\n")
    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True, nodes=NODES, resources=(
            Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role=role, active=True,
                     nodes=("kvm1",)),)),
        domains={"kvm1": {"web01": Domain(name="web01", state="paused", reason=reason,
                                          since=since)}})
    ledger = LedgerView(failed_at={} if failed_at is None else {("vm-web01", "kvm1"): failed_at})
    return Context(index=build_index(observed), desired=desired, now=now, ledger=ledger)


def test_an_io_error_pause_is_critical_after_the_grace_and_not_before() -> None:
    assert paused.plan(ctx("ioerror", since=100.0, now=101.0)).findings == ()
    assert paused.due_at(ctx("ioerror", since=100.0, now=101.0)) == 102.0
    (f,) = paused.plan(ctx("ioerror", since=100.0, now=103.0)).findings
    assert (f.kind, f.severity, f.subject) == ("vm-paused", "critical", "vm-web01@kvm1")
    assert "paused on kvm1 (ioerror)" in f.message and "on_pause: report" in f.message
    assert paused.plan(ctx("ioerror", since=100.0, now=103.0)).actions == ()


def test_a_pause_by_pacemakers_migration_is_not_reported_but_a_left_over_one_is() -> None:
    assert paused.plan(ctx("migration", 100.0, 500.0, role="Migrating")).findings == ()
    # Paused "for migration" while Pacemaker migrates nothing: a migration behind its back
    # that got stuck -- reported.
    assert len(paused.plan(ctx("migration", 100.0, 500.0)).findings) == 1


def test_restart_marks_the_resource_failed_through_pacemaker() -> None:
    plan = paused.plan(ctx("watchdog", 100.0, 110.0, on_pause="restart"))
    assert plan.actions == (FailResource(reconciler="paused", rsc="vm-web01", node="kvm1",
                                         why=plan.actions[0].why),)
    # A snapshot or a save is a job in progress: reported, not broken by a restart.
    plan = paused.plan(ctx("snapshot", 100.0, 110.0, on_pause="restart"))
    assert plan.actions == () and "job may be in progress" in plan.findings[0].message


def undeclared_ctx(on_pause: str) -> Context:
    """db01 is a VirtualDomain resource of the CIB that the desired file does not list."""
    desired = parse_desired(f"version: 1\nvms:\n  - name: web01\npolicy:\n  on_pause: {on_pause}\n")
    vd = "ocf:heartbeat:VirtualDomain"
    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True, nodes=NODES, resources=(
            Resource(id="vm-db01", agent=vd, role="Started", active=True, nodes=("kvm2",)),)),
        cib=CibConfig(resources={"vm-db01": ResourceConfig(id="vm-db01", kind="primitive",
                                                             agent=vd)}),
        domains={"kvm2": {"db01": Domain(name="db01", state="paused", reason="ioerror",
                                         since=100.0)}})
    return Context(index=build_index(observed), desired=desired, now=110.0)


def test_a_cluster_vm_the_file_does_not_list_is_reported_never_restarted() -> None:
    assert cluster_vms(undeclared_ctx("report").index, undeclared_ctx("report").desired) == {
        "web01": "vm-web01", "db01": "vm-db01", "vm-db01": "vm-db01"}
    (f,) = paused.plan(undeclared_ctx("report")).findings
    assert (f.kind, f.subject) == ("vm-paused", "vm-db01@kvm2")
    plan = paused.plan(undeclared_ctx("restart"))
    assert plan.actions == ()
    assert "not restarted: the desired file does not list it" in plan.findings[0].message


def test_one_restart_per_pause_and_none_while_pacemaker_acts() -> None:
    # Marked failed at 103 during the pause that began at 100: Pacemaker's recovery is under
    # way (its stop may wait out a graceful timeout); asking again only counts more failures.
    plan = paused.plan(ctx("ioerror", 100.0, 200.0, on_pause="restart", failed_at=103.0))
    assert plan.actions == () and "marked failed, Pacemaker recovers it" in plan.findings[0].message
    # A fail from before this pause (an earlier episode) does not count for this one.
    plan = paused.plan(ctx("ioerror", 100.0, 200.0, on_pause="restart", failed_at=90.0))
    assert [type(a).__name__ for a in plan.actions] == ["FailResource"]
    # Pacemaker is stopping it: no --fail on top of its own operation.
    plan = paused.plan(ctx("ioerror", 100.0, 200.0, on_pause="restart", role="Stopping"))
    assert plan.actions == () and "operation in flight" in plan.findings[0].message
