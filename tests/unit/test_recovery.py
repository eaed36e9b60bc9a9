"""Recovery through Pacemaker: migration-threshold/failure-timeout from the file; a ban they make
is never lifted early by a cleanup."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from controller.model.actions import Cleanup, SetMeta
from controller.model.context import Context
from controller.model.desired import parse_desired
from controller.model.index import build_index
from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    Failure,
    ObservedState,
    OpHistory,
    Resource,
    ResourceConfig,
)
from reconcilers import health, recovery
from tests.unit.clusters import NODES, ctx, index

DESIRED = """version: 1
vms:
  - name: web01
    placement: {prefer: kvm1}
policy:
  recovery: {migration_threshold: 3, failure_timeout_seconds: 600}
"""
FAILED_AT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC).timestamp()


def test_recovery_policy_sets_the_meta_attributes_pacemaker_reads() -> None:
    plan = recovery.plan(ctx(index({"web01": "kvm1"}), DESIRED))
    assert {(a.name, a.value) for a in plan.actions if isinstance(a, SetMeta)} == {
        ("migration-threshold", "3"), ("failure-timeout", "600s")}


def test_equal_intervals_in_other_units_are_not_drift() -> None:
    idx = index({"web01": "kvm1"},
                meta={"web01": {"migration-threshold": "3", "failure-timeout": "10min"}})
    assert recovery.plan(ctx(idx, DESIRED)).actions == ()


def failed_on_kvm1(count: int, threshold: int = 3, meta: dict[str, str] | None = None
                   ) -> Context:
    """web01 failed `count` times on kvm1 and runs on kvm2 now (crm_mon's view of it)."""
    status = ClusterStatus(
        dc="kvm1", with_quorum=True, nodes=NODES,
        resources=(Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role="Started",
                            active=True, nodes=("kvm2",)),),
        failures=(Failure(resource="vm-web01", node="kvm1", task="monitor", rc=7,
                          status="complete", last_rc_change="2026-11-30 12:00:00Z"),),
        history=(OpHistory(node="kvm1", resource="vm-web01", fail_count=count,
                           migration_threshold=threshold,
                           last_failure="2026-11-30 12:00:00Z"),))
    cfg = {"vm-web01": ResourceConfig(id="vm-web01", kind="primitive",
                                      agent="ocf:heartbeat:VirtualDomain",
                                      meta={"migration-threshold": "3", "failure-timeout": "600s"}
                                      if meta is None else meta)}
    idx = build_index(ObservedState(status=status, cib=CibConfig(resources=cfg)))
    return Context(index=idx, desired=parse_desired(DESIRED), now=0.0)


def cleanups(c: Context, now: float) -> list[Cleanup]:
    c = Context(index=c.index, desired=c.desired, now=now)
    return [a for a in health.plan(c).actions if isinstance(a, Cleanup)]


def test_a_migration_threshold_ban_is_not_cleaned_before_its_failure_timeout() -> None:
    banned = failed_on_kvm1(3)
    assert cleanups(banned, FAILED_AT + 100) == []  # past the 15 s backoff, inside the timeout
    assert cleanups(banned, FAILED_AT + 599) == []
    (c,) = cleanups(banned, FAILED_AT + 601)
    assert (c.rsc, c.node) == ("vm-web01", "kvm1")


def test_failures_below_the_threshold_count_towards_it_and_are_not_cleaned_early() -> None:
    # Cleaning each failure after a short backoff would keep the count below the threshold
    # forever: a VM failing every minute would never be moved away.
    assert cleanups(failed_on_kvm1(1), FAILED_AT + 100) == []
    assert len(cleanups(failed_on_kvm1(1), FAILED_AT + 601)) == 1


def test_without_a_recovery_policy_failures_keep_their_backoff_cleanup() -> None:
    (c,) = cleanups(failed_on_kvm1(1, threshold=1_000_000, meta={}), FAILED_AT + 100)
    assert (c.rsc, c.node) == ("vm-web01", "kvm1")


def recovered_on_the_migration_target(source_failcount: int = 0,
                                      source_tasks: tuple[str, ...] = ("migrate_to", "stop"),
                                      target_tasks: tuple[str, ...] = ("migrate_from", "monitor"),
                                      ) -> Context:
    """web01 was live-migrated kvm3 -> kvm2 (kvm3's history keeps the migrate_to), then failed
    on kvm2 and Pacemaker restarted it there."""
    history = [OpHistory(node="kvm2", resource="vm-web01", fail_count=1,
                         migration_threshold=1_000_000, last_failure="2026-11-30 12:00:00Z",
                         tasks=target_tasks),
               OpHistory(node="kvm3", resource="vm-web01", fail_count=source_failcount,
                         migration_threshold=1_000_000, tasks=source_tasks)]
    status = ClusterStatus(
        dc="kvm1", with_quorum=True, nodes=NODES,
        resources=(Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role="Started",
                            active=True, nodes=("kvm2",)),),
        failures=(Failure(resource="vm-web01", node="kvm2", task="monitor", rc=7,
                          status="complete", last_rc_change="2026-11-30 12:00:00Z"),),
        history=tuple(history))
    cib = CibConfig(resources={"vm-web01": ResourceConfig(
        id="vm-web01", kind="primitive", agent="ocf:heartbeat:VirtualDomain")},
        migrations=(("vm-web01", "kvm3", "kvm2"),))
    return Context(index=build_index(ObservedState(status=status, cib=cib)),
                   desired=parse_desired("version: 1\nvms:\n  - name: web01\n"), now=0.0)


def test_a_cleanup_on_a_migration_target_cleans_the_source_first() -> None:
    # Without kvm3, Pacemaker 2.1 sees a half-done migration and restarts the running VM.
    (c,) = cleanups(recovered_on_the_migration_target(), FAILED_AT + 100)
    assert (c.node, c.sources) == ("kvm2", ("kvm3",))
    # A source with a fail-count of its own is not refreshed on the way (that would erase a
    # count Pacemaker keeps): kvm2's fail-count alone is reset; kvm3 gets its own cleanup.
    got = cleanups(recovered_on_the_migration_target(source_failcount=2), FAILED_AT + 100)
    assert [(c.node, c.sources, c.reset_only) for c in got] == [("kvm2", (), True),
                                                               ("kvm3", (), False)]
    # A source whose own history holds a migrate_from: refreshing it would orphan that
    # migration's source in turn -- no safe order to erase history in, so only the fail-count
    # is reset (attrd_updater --delete); the history, and the VM, are left alone.
    (c,) = cleanups(recovered_on_the_migration_target(
        source_tasks=("migrate_from", "migrate_to", "stop")), FAILED_AT + 100)
    assert (c.node, c.sources, c.reset_only) == ("kvm2", (), True)
    # No migrate_from on the failed node: nothing to orphan, a plain cleanup.
    (c,) = cleanups(recovered_on_the_migration_target(target_tasks=("start", "monitor")),
                    FAILED_AT + 100)
    assert (c.node, c.sources) == ("kvm2", ())


def test_the_migration_source_is_known_from_crm_mons_history_even_when_the_cib_is_behind() -> None:
    """The CIB is re-read only when the configuration changes; crm_mon's node_history is fresh
    every full pass and lists kvm3's migrate_to (seen in the lab: a cleanup after a migration the
    cached CIB did not know yet restarted the VM)."""
    c = recovered_on_the_migration_target()
    status = c.index.observed.status
    cib = msgspec.structs.replace(c.index.observed.cib, migrations=())
    idx = build_index(ObservedState(status=status, cib=cib))
    (got,) = cleanups(Context(index=idx, desired=c.desired, now=0.0), FAILED_AT + 100)
    assert (got.node, got.sources) == ("kvm2", ("kvm3",))


def test_a_reset_fail_count_is_not_cleaned_again_while_the_failed_action_stays_listed() -> None:
    """After the fail-count is reset crm_mon still lists the failed action, but its node history
    says fail-count 0: nothing left to clean (no loop, no breaker)."""
    c = recovered_on_the_migration_target(source_tasks=("migrate_from", "migrate_to", "stop"))
    status = c.index.observed.status
    history = tuple(msgspec.structs.replace(h, fail_count=0) for h in status.history)
    idx = build_index(ObservedState(status=msgspec.structs.replace(status, history=history),
                                    cib=c.index.observed.cib))
    assert idx.fail_counts == {} and status.failures
    assert cleanups(Context(index=idx, desired=c.desired, now=0.0), FAILED_AT + 100) == []
