"""Storage: a VM on GFS2 starts after and runs with the GFS2 clone; dlm -> clvmd -> gfs2."""

from __future__ import annotations

from controller.model.actions import AddColocation, AddOrder, Plan, RemoveConstraint, SetProperty
from controller.model.index import ClusterIndex
from controller.model.observed import ColocationConstraint, Domain, Node, OrderConstraint
from reconcilers import storage
from tests.unit.clusters import NODES, ctx, index

DESIRED = """version: 1
storage:
  - name: gfs2
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
    requires: [clvmd-clone, dlm-clone]
vms:
  - name: web01
"""


def pairs(plan: Plan) -> set[tuple[str, str, str]]:
    out = set()
    for a in plan.actions:
        if isinstance(a, AddOrder):
            out.add(("order", a.first, a.then))
        elif isinstance(a, AddColocation):
            out.add(("colocation", a.rsc, a.with_rsc))
    return out


def test_vm_whose_config_is_on_gfs2_gets_order_and_colocation_and_the_chain() -> None:
    idx = index({"web01": "kvm1"}, config={"web01": "/kvm/storage/web01.xml"}, gfs2=True)
    plan = storage.plan(ctx(idx, DESIRED))
    assert pairs(plan) == {
        ("order", "gfs2_res01-clone", "vm-web01"), ("colocation", "vm-web01", "gfs2_res01-clone"),
        ("order", "clvmd-clone", "gfs2_res01-clone"), ("colocation", "gfs2_res01-clone", "clvmd-clone"),
        ("order", "dlm-clone", "clvmd-clone"), ("colocation", "clvmd-clone", "dlm-clone"),
    }
    # Without quorum a GFS2 node must freeze, not stop (stopping needs DLM, which needs quorum).
    assert any(isinstance(a, SetProperty) and a.name == "no-quorum-policy" and a.value == "freeze"
               for a in plan.actions)


def test_a_vm_off_shared_storage_gets_nothing() -> None:
    idx = index({"web01": "kvm1"}, gfs2=True)
    assert not any(a.resource == "vm-web01" for a in storage.plan(ctx(idx, DESIRED)).actions)


def test_equivalent_pcs_made_constraints_satisfy_the_file() -> None:
    idx = index({"web01": "kvm1"}, config={"web01": "/kvm/storage/web01.xml"}, gfs2=True,
                order=(OrderConstraint(id="order-gfs2-web01", first="gfs2_res01-clone",
                                       then="vm-web01", kind="Mandatory"),),
                colocation=(ColocationConstraint(id="colo-web01", rsc="vm-web01",
                                                 with_rsc="gfs2_res01-clone", score="INFINITY"),))
    assert not any(a.resource == "vm-web01" for a in storage.plan(ctx(idx, DESIRED)).actions)


OWNED = (OrderConstraint(id="warden-order-gfs2_res01-clone-vm-web01", first="gfs2_res01-clone",
                         then="vm-web01", kind="Mandatory"),)
OWNED_COLO = (ColocationConstraint(id="warden-colo-vm-web01-gfs2_res01-clone", rsc="vm-web01",
                                   with_rsc="gfs2_res01-clone", score="INFINITY"),)
ELSEWHERE = {"kvm1": {"web01": Domain(name="web01", state="running",
                                      disks=("/var/lib/libvirt/images/web01.qcow2",))}}


def unlisted(idx: ClusterIndex) -> Plan:
    """The plan when the file lists no VM: web01's dependencies rest on evidence alone."""
    return storage.plan(ctx(idx, DESIRED.replace("vms:\n  - name: web01\n", "")))


def removals(idx: ClusterIndex) -> list[str]:
    return sorted(a.id for a in unlisted(idx).actions if isinstance(a, RemoveConstraint))


def test_a_fresh_listing_of_the_running_domain_off_the_storage_removes_the_dependency() -> None:
    idx = index({"web01": "kvm1"}, gfs2=True, order=OWNED, colocation=OWNED_COLO,
                domains=ELSEWHERE)
    assert removals(idx) == ["warden-colo-vm-web01-gfs2_res01-clone",
                             "warden-order-gfs2_res01-clone-vm-web01"]


def test_missing_evidence_keeps_the_dependency_and_says_so() -> None:
    cases = {
        "stopped VM, no listing": index({"web01": None}, gfs2=True, order=OWNED,
                                        colocation=OWNED_COLO),
        "libvirtd down (no listing)": index({"web01": "kvm1"}, gfs2=True, order=OWNED,
                                            colocation=OWNED_COLO),
        "stale agent": index({"web01": "kvm1"}, gfs2=True, order=OWNED, colocation=OWNED_COLO,
                             domains=ELSEWHERE, stale=frozenset({"kvm1"})),
        "offline node": index({"web01": "kvm1"}, gfs2=True, order=OWNED, colocation=OWNED_COLO,
                              domains=ELSEWHERE,
                              nodes={**NODES, "kvm1": Node(name="kvm1", online=False)}),
    }
    for what, idx in cases.items():
        assert removals(idx) == [], what
        kept = sorted(f.subject for f in unlisted(idx).findings if f.kind == "storage-kept")
        assert kept == ["warden-colo-vm-web01-gfs2_res01-clone",
                        "warden-order-gfs2_res01-clone-vm-web01"], what


def test_an_asymmetric_order_does_not_count_as_the_storage_order() -> None:
    idx = index({"web01": "kvm1"}, config={"web01": "/kvm/storage/web01.xml"}, gfs2=True,
                order=(OrderConstraint(id="o", first="gfs2_res01-clone", then="vm-web01",
                                       kind="Mandatory", symmetrical=False),))
    assert ("order", "gfs2_res01-clone", "vm-web01") in pairs(storage.plan(ctx(idx, DESIRED)))
