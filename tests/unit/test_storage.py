"""Storage: a VM on GFS2 starts after and runs with the GFS2 clone; dlm -> clvmd -> gfs2."""

from __future__ import annotations

from controller.model.actions import AddColocation, AddOrder, SetProperty
from controller.model.observed import ColocationConstraint, OrderConstraint
from reconcilers import storage
from tests.unit.clusters import ctx, index

DESIRED = """version: 1
storage:
  - name: gfs2
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
    requires: [clvmd-clone, dlm-clone]
vms:
  - name: web01
"""


def pairs(plan: storage.Plan) -> set[tuple[str, str, str]]:  # type: ignore[name-defined]
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
