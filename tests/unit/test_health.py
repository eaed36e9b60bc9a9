"""Health findings: a domain where Pacemaker does not place it is critical, but only real ones."""

from __future__ import annotations

from controller.model.context import Context
from controller.model.desired import parse_desired
from controller.model.index import build_index
from controller.model.observed import ClusterStatus, Domain, Node, ObservedState, Resource
from reconcilers.health import plan as plan_health

DESIRED = parse_desired("version: 1\nvms:\n  - name: web01\n")
NODES = {n: Node(name=n, online=n != "kvm3") for n in ("kvm1", "kvm2", "kvm3")}


def findings(role: str, nodes: tuple[str, ...], domains: dict[str, str],
             stale: frozenset[str] = frozenset()) -> list[str]:
    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True, nodes=NODES, resources=(
            Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role=role,
                     active=bool(nodes), nodes=nodes),)),
        domains={node: {"web01": Domain(name="web01", state=state)}
                 for node, state in domains.items()},
        stale=stale)
    ctx = Context(index=build_index(observed), desired=DESIRED, now=0.0)
    return [f.message for f in plan_health(ctx).findings]


def test_domain_running_where_pacemaker_does_not_place_it_is_critical() -> None:
    (msg,) = findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "running"})
    assert "split brain? domain web01 runs on kvm1, kvm2" in msg
    (msg,) = findings("Stopped", (), {"kvm2": "running"})
    assert "runs on kvm2 where Pacemaker does not have vm-web01 active" in msg


def test_agreement_and_shut_off_domains_are_fine() -> None:
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "shutoff"}) == []


def test_transitions_and_stale_listings_are_not_split_brain() -> None:
    # Pacemaker is starting it (crm_mon role "Starting"): libvirt may be ahead.
    assert findings("Starting", (), {"kvm2": "running"}) == []
    assert findings("Migrating", ("kvm1",), {"kvm1": "running", "kvm2": "running"}) == []
    # kvm3 is offline: its last listing is history.
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm3": "running"}) == []
    # kvm2's agent went silent: its listing is not trusted.
    assert findings("Started", ("kvm1",), {"kvm1": "running", "kvm2": "running"},
                    stale=frozenset({"kvm2"})) == []
