"""QEMU machine types (issue "Rolling upgrade", 2): a guest started on a Debian 13 node runs
pc-i440fx-10.0, which Debian 12's QEMU 7.2 lacks; its live migration there fails and Pacemaker
restarts it. Read from libvirt, reported, and every predicted migration into it is held."""

from __future__ import annotations

import msgspec

from controller.engine.preview import Preview, disruptions
from controller.model.actions import TransitionStep
from controller.model.desired import parse_desired
from controller.model.index import build_index
from controller.model.observed import Domain, HostInfo
from probes.libvirt.domains import parse_domain_xml, parse_machines
from reconcilers import machines
from tests.unit.clusters import ctx, index

# The shape of `virsh capabilities` (libvirt's formatcaps: guest/arch/machine, canonical=)
CAPS_12 = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>
<machine maxCpus='255'>pc-i440fx-7.2</machine>
<machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
<machine maxCpus='255'>pc-i440fx-7.1</machine>
<machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
<machine maxCpus='288'>pc-q35-7.2</machine>
<domain type='kvm'/></arch></guest></capabilities>"""
CAPS_13 = CAPS_12.replace("7.2", "10.0").replace(
    "<machine maxCpus='255'>pc-i440fx-7.1</machine>",
    "<machine maxCpus='255'>pc-i440fx-7.2</machine>")
GUEST = """<domain type='kvm' id='3'>
  <name>db01</name>
  <os><type arch='x86_64' machine='pc-i440fx-10.0'>hvm</type></os>
</domain>"""


def test_machine_types_are_read_from_capabilities_and_the_running_guest() -> None:
    assert parse_machines(CAPS_12) == ("pc", "pc-i440fx-7.1", "pc-i440fx-7.2", "pc-q35-7.2",
                                       "q35")
    assert parse_domain_xml(GUEST).machine == "pc-i440fx-10.0"


def mixed_index():  # type: ignore[no-untyped-def]
    """db01 started on kvm3 (Debian 13), kvm1 and kvm2 on Debian 12."""
    base = index({"db01": "kvm3", "web01": "kvm1"})
    hosts = {n: HostInfo(cpus=8, memory_kib=1 << 24, machines=parse_machines(
        CAPS_13 if n == "kvm3" else CAPS_12)) for n in ("kvm1", "kvm2", "kvm3")}
    listed = {"kvm3": {"db01": Domain(name="db01", state="running", machine="pc-i440fx-10.0")},
              "kvm1": {"web01": Domain(name="web01", state="running", machine="pc-i440fx-7.2")}}
    return build_index(msgspec.structs.replace(base.observed, hosts=hosts, domains=listed))


def test_a_vm_on_a_machine_type_other_nodes_lack_is_reported_with_the_fix() -> None:
    plan = machines.plan(ctx(mixed_index(), "version: 1\nvms:\n  - name: db01\n  - name: web01\n"))
    (f,) = plan.findings
    assert (f.kind, f.rsc, f.node) == ("machine-type", "vm-db01", "kvm3")
    assert "pc-i440fx-10.0" in f.message and "kvm1, kvm2 lacks" in f.message
    assert "pin <type machine='pc-i440fx-7.2'>" in f.message  # the newest every node has
    assert not plan.actions


def test_a_predicted_migration_into_a_missing_machine_type_is_a_disruption() -> None:
    idx = mixed_index()
    desired = parse_desired("version: 1\nvms:\n  - name: db01\n  - name: web01\n")
    back = Preview(steps=(TransitionStep(resource="vm-db01", action="migrate", from_node="kvm3",
                                         to_node="kvm1"),))
    (why,) = disruptions(back, idx, desired)
    assert "lacks its machine type pc-i440fx-10.0" in why
    # web01 (7.2) may go to Debian 13, whose QEMU keeps 7.2: no disruption
    fine = Preview(steps=(TransitionStep(resource="vm-web01", action="migrate", from_node="kvm1",
                                         to_node="kvm3"),))
    assert disruptions(fine, idx, desired) == []


def test_a_mixed_version_cluster_is_said_with_what_is_safe() -> None:
    """crm_mon's current_dc mixed_version and each node's feature_set (crm_mon-2.25.rng,
    nodes-2.24.rng): Debian 12's Pacemaker 2.1.5 has 3.16.1, Debian 13's 3.0.0 3.20.0."""
    from controller.model.observed import ClusterStatus, Node
    from reconcilers import versions
    from tests.unit.clusters import ctx

    nodes = {n: Node(name=n, online=True, feature_set="3.20.0" if n == "kvm3" else "3.16.1",
                     is_dc=n == "kvm1") for n in ("kvm1", "kvm2", "kvm3")}
    base = index({"web01": "kvm1"}, nodes=nodes)
    status = msgspec.structs.replace(base.observed.status, mixed_version=True, dc_version="2.1.5")
    hosts = {"kvm3": HostInfo(cpus=8, memory_kib=1 << 24, os="Debian 13.8")}
    idx = build_index(msgspec.structs.replace(base.observed, status=status, hosts=hosts))
    (f,) = versions.plan(ctx(idx, "version: 1\n")).findings
    assert f.kind == "mixed-version"
    assert "3.16.1 on kvm1, kvm2; 3.20.0 on kvm3" in f.message and "kvm3 Debian 13.8" in f.message
    assert "DC kvm1 2.1.5" in f.message and "CIB schema" in f.message
    plain = build_index(msgspec.structs.replace(base.observed, status=msgspec.structs.replace(
        status, mixed_version=False)))
    assert not versions.plan(ctx(plain, "version: 1\n")).findings
    assert isinstance(ClusterStatus().mixed_version, bool)
