"""Which domains are cluster VMs (controller/model/vms.py): the file's VMs by name, every other
top-level VirtualDomain resource by the vm-NAME convention; a scoped lookup agrees with the
full one."""

from __future__ import annotations

from controller.model.desired import parse_desired
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import CibConfig, ClusterStatus, ObservedState, ResourceConfig
from controller.model.vms import cluster_vms, vm_names

VD = "ocf:heartbeat:VirtualDomain"


def index() -> ClusterIndex:
    res = {
        "kvm-web": ResourceConfig(id="kvm-web", kind="primitive", agent=VD),  # the file's web01
        "vm-db01": ResourceConfig(id="vm-db01", kind="primitive", agent=VD),
        "plain": ResourceConfig(id="plain", kind="primitive", agent=VD),
        "dlm": ResourceConfig(id="dlm", kind="primitive", agent="ocf:pacemaker:controld"),
        "vm-ingroup": ResourceConfig(id="vm-ingroup", kind="primitive", agent=VD, parent="g"),
    }
    return build_index(ObservedState(status=ClusterStatus(dc="kvm1", with_quorum=True),
                                     cib=CibConfig(resources=res)))


DESIRED = parse_desired("version: 1\nvms:\n  - name: web01\n    resource: kvm-web\n"
                        "  - name: app\n")


def test_every_top_level_virtualdomain_resource_is_a_cluster_vm() -> None:
    vms = cluster_vms(index(), DESIRED)
    assert vms == {"web01": "kvm-web", "app": "vm-app", "db01": "vm-db01",
                   "vm-db01": "vm-db01", "plain": "plain"}
    assert vm_names(vms) == {"kvm-web": "web01", "vm-app": "app", "vm-db01": "db01",
                             "plain": "plain"}


def test_a_scoped_lookup_agrees_with_the_full_one() -> None:
    full = cluster_vms(index(), DESIRED)
    for name in (*full, "dlm", "ingroup", "vm-ingroup", "kvm-web", "nosuch"):
        assert cluster_vms(index(), DESIRED, frozenset({name})) == (
            {name: full[name]} if name in full else {}), name


def test_domains_running_outside_the_cluster_are_rows_marked_so() -> None:
    from controller.model.observed import Domain
    from controller.model.overview import state_text, vm_rows

    observed = ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True),
        domains={"kvm2": {"app": Domain(name="app", state="running"),
                          "stray": Domain(name="stray", state="paused"),
                          "off": Domain(name="off", state="shutoff")}})
    rows = {r.vm: r for r in vm_rows(observed, DESIRED)}
    # the file's `app` (no resource yet) and a domain nothing names; a shut-off one is no VM
    assert rows["app"].health == rows["stray"].health == "outside"
    assert "off" not in rows
    assert "no Pacemaker resource" in rows["app"].flags[0] and "kvm2:running" in rows["app"].flags[0]
    assert state_text(rows["stray"]) == "OUTSIDE (absent)"
    assert rows["web01"].health == "absent"  # declared, not running anywhere
