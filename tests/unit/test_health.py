"""Health findings: a domain where Pacemaker does not place it is critical, but only real ones."""

from __future__ import annotations

import time

from controller.model.actions import Cleanup, Finding
from controller.model.context import Context
from controller.model.desired import parse_desired
from controller.model.index import build_index
from controller.model.observed import (
    ClusterStatus,
    Domain,
    Failure,
    Node,
    ObservedState,
    Resource,
)
from reconcilers.health import plan as plan_health

DESIRED = parse_desired("version: 1\nvms:\n  - name: web01\n")
NODES = {n: Node(name=n, online=n != "kvm3") for n in ("kvm1", "kvm2", "kvm3")}


def findings(role: str, nodes: tuple[str, ...], domains: dict[str, str],
             stale: frozenset[str] = frozenset(), unclean: str = "",
             ) -> list[tuple[str, str | None, str | None]]:
    """(kind, resource, node) of each finding: what code reads, not the prose."""
    return [(f.kind, f.rsc, f.node) for f in finding_list(role, nodes, domains, stale, unclean)]


def finding_list(role: str, nodes: tuple[str, ...], domains: dict[str, str],
                 stale: frozenset[str] = frozenset(), unclean: str = "") -> list[Finding]:
    status_nodes = {n: Node(name=n, online=st.online and n != unclean, unclean=n == unclean)
                    for n, st in NODES.items()}
    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True, nodes=status_nodes, resources=(
            Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role=role,
                     active=bool(nodes), nodes=nodes),)),
        domains={node: {"web01": Domain(name="web01", state=state)}
                 for node, state in domains.items()},
        stale=stale)
    ctx = Context(index=build_index(observed), desired=DESIRED, now=0.0)
    return list(plan_health(ctx).findings)


def test_domain_running_where_pacemaker_does_not_place_it_is_critical() -> None:
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "running"}) == [
        ("split-brain", "vm-web01", None)]
    (f,) = finding_list("Stopped", (), {"kvm2": "running"})
    assert (f.kind, f.severity, f.rsc) == ("unplaced-domain", "critical", "vm-web01")


def test_agreement_and_shut_off_domains_are_fine() -> None:
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "shutoff"}) == []


def test_transitions_and_stale_listings_are_not_split_brain() -> None:
    # Pacemaker is starting it (crm_mon role "Starting"): libvirt may be ahead.
    assert findings("Starting", (), {"kvm2": "running"}) == []
    assert findings("Migrating", ("kvm1",), {"kvm1": "running", "kvm2": "running"}) == []
    # kvm3 is offline (clean: fenced, or stopped by Pacemaker) and its agent went silent: the
    # last listing it sent is history.
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm3": "running"},
                    stale=frozenset({"kvm3"})) == []
    # kvm2's agent went silent: its listing is not trusted.
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "running"},
                    stale=frozenset({"kvm2"})) == []


def test_a_guest_on_an_unclean_node_is_split_brain_at_once_even_from_a_silent_agent() -> None:
    # kvm2 was partitioned: Pacemaker sees it UNCLEAN (fencing pending or failed) and runs
    # web01 on kvm1 too; kvm2's agent cannot reach us (stale), its last listing had web01.
    (f,) = finding_list("Started", ("kvm1",), {"kvm1": "running", "kvm2": "running"},
                        stale=frozenset({"kvm2"}), unclean="kvm2")
    assert f.kind == "split-brain" and f.severity == "critical" and f.urgent
    assert (f.rsc, f.node, f.subject) == ("vm-web01", "kvm2", "vm-web01@kvm2")
    # A paused guest there is as alive as a running one; a shut-off one is not.
    assert len(finding_list("Started", ("kvm1",), {"kvm2": "paused"}, unclean="kvm2",
                            stale=frozenset({"kvm2"}))) == 1
    assert finding_list("Started", ("kvm1",), {"kvm1": "running", "kvm2": "shutoff"},
                        unclean="kvm2") == []


def test_a_live_agent_on_a_node_pacemaker_sees_offline_is_believed() -> None:
    # kvm3's cluster stack died but its libvirtd and agent live (no fencing): the guest still
    # runs there while Pacemaker would start it elsewhere.
    (f,) = finding_list("Started", ("kvm1",), {"kvm1": "running", "kvm3": "running"})
    assert (f.kind, f.rsc, f.node) == ("split-brain", "vm-web01", "kvm3")
    assert not f.urgent  # reported once it persists (the agent may just not be marked stale)


# -- the operator's cleanup (vms[].clean_failures_before) -------------------------------------
T0 = 1796205600.0  # 2026-12-02 10:00:00Z


def asked_plan(before: str, failed_at: float, now: float, failed: bool = False
               ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(Cleanup actions as (resource, node, why), finding kinds) of health for web01, whose
    monitor failed on kvm1 at `failed_at`, with the file asking its failures up to `before`."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(failed_at))
    observed = ObservedState(status=ClusterStatus(
        dc="kvm1", with_quorum=True, nodes=NODES,
        resources=(Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role="Started",
                            active=True, nodes=("kvm1",), failed=failed),),
        failures=(Failure(resource="vm-web01", node="kvm1", task="monitor", rc=7,
                          status="complete", interval_ms=10000, last_rc_change=stamp),)))
    desired = parse_desired("version: 1\nvms:\n  - name: web01\n"
                            f"    clean_failures_before: {before}\n")
    p = plan_health(Context(index=build_index(observed), desired=desired, now=now))
    return ([(a.rsc, a.node, a.why) for a in p.actions if isinstance(a, Cleanup)],
            [f.kind for f in p.findings])


def test_the_operators_cleanup_cleans_failures_up_to_its_instant_even_of_a_failed_vm() -> None:
    # failed at 10:00, FAILED still (the automatic cleanup waits for it to run again): asked
    # at 10:05, cleaned at once
    (clean,), kinds = asked_plan("2026-12-02T10:05:00Z", T0, T0 + 360, failed=True)
    assert clean[:2] == ("vm-web01", "kvm1") and "the file asks" in clean[2]
    assert "vm-failed" in kinds
    # a failure after the instant is not the operator's: the policy's backoff holds it (5 s)
    assert asked_plan("2026-12-02T10:05:00Z", T0 + 600, T0 + 605) == ([], [])
    # an instant still to come cleans nothing and says so
    cleans, kinds = asked_plan("2026-12-02T10:30:00Z", T0, T0 + 10)
    assert cleans == [] and kinds == ["cleanup-in-future"]
