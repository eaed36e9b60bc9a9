"""Probe parsers over real outputs, and the store's fold."""

from __future__ import annotations

from pathlib import Path

from controller.engine.store import fold, mark_stale
from controller.model.events import (
    AlertReceived,
    Dirty,
    DomainLifecycle,
    DomainSeen,
    Heartbeat,
    Mount,
    MountsSeen,
    QuorumChanged,
    Snapshot,
    envelope,
)
from controller.model.observed import Domain, ObservedState, SourceKey
from probes.corosync.quorum import parse_quorumtool, split_blocks
from probes.libvirt.domains import parse_domain_xml
from probes.libvirt.events import lifecycle_names
from probes.pacemaker.alerts import parse_alert
from probes.storage.mounts import parse_dlm_ls, parse_mountinfo

FIX = Path(__file__).parent.parent / "fixtures" / "corosync"


def test_quorumtool_without_quorum() -> None:
    q = parse_quorumtool((FIX / "two-nodes-one-up.txt").read_text(), "node1")
    assert q == QuorumChanged(node="node1", state="ok", quorate=False, members=("node1",),
                              expected_votes=2, total_votes=1)


def test_quorumtool_after_expected_votes_lowered() -> None:
    q = parse_quorumtool((FIX / "expected-lowered.txt").read_text(), "node1")
    assert (q.quorate, q.expected_votes) == (True, 1)


def test_quorumtool_garbage_is_unknown() -> None:
    assert parse_quorumtool("Cannot initialize CMAP service\n", "n").state == "unknown"


def test_monitor_stream_splits_into_blocks() -> None:
    one = (FIX / "two-nodes-one-up.txt").read_text()
    two = (FIX / "expected-lowered.txt").read_text()
    lines = iter((one + two).splitlines(keepends=True))
    blocks = list(split_blocks(lines))
    assert [parse_quorumtool(b, "n").quorate for b in blocks] == [False, True]


FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_mountinfo_keeps_shared_filesystems_only() -> None:
    assert parse_mountinfo((FIXTURES / "storage" / "mountinfo-gfs2.txt").read_text()) == (
        Mount(mountpoint="/kvm/storage", fstype="gfs2", source="/dev/mapper/vg_cluster-lv_storage"),
        Mount(mountpoint="/mnt/with space", fstype="nfs4", source="srv:/export"),
    )


def test_a_real_mountinfo_of_local_filesystems_has_no_shared_storage() -> None:
    assert parse_mountinfo((FIXTURES / "storage" / "mountinfo-local.txt").read_text()) == ()


def test_dlm_tool_ls() -> None:
    text = (FIXTURES / "storage" / "dlm_tool-ls.txt").read_text()
    assert parse_dlm_ls(text) == ("clvmd", "gfs2_res01")


def test_domain_xml_disks_and_console() -> None:
    # libvirt's own `virsh dumpxml` (tests/fixtures/regen.sh): a file disk, a block disk, an
    # empty CD-ROM (no source: not a disk of the VM) and VNC on loopback.
    facts = parse_domain_xml((FIXTURES / "libvirt" / "web01.xml").read_text())
    assert facts.disks == ("/kvm/storage/images/web01.qcow2", "/dev/mapper/lun1")
    assert (facts.vnc_port, facts.vnc_listen) == (5901, "127.0.0.1")


def test_lifecycle_names_follow_libvirt() -> None:
    assert lifecycle_names(5, 5) == ("stopped", "failed")  # kill -9 of qemu (LAB.md)
    assert lifecycle_names(5, 3) == ("stopped", "migrated")
    assert lifecycle_names(3, 2) == ("suspended", "ioerror")
    assert lifecycle_names(42, 0) == ("event-42", "0")


def test_alert_datagram() -> None:
    a = parse_alert(b'{"kind":"resource","node":"kvm1","rsc":"vm-web01","task":"stop",'
                    b'"rc":"0","node_sequence":"17"}')
    assert (a.kind, a.resource, a.task, a.sequence) == ("resource", "vm-web01", "stop", 17)


def test_fold_tracks_domains_quorum_mounts_and_staleness() -> None:
    s = ObservedState()
    s, ch = fold(s, envelope("kvm1", 1, DomainSeen(node="kvm1", domains=(
        Domain(name="web01", state="running"),))))
    assert ch == {Dirty("domain", "web01")} and s.domains["kvm1"]["web01"].state == "running"
    s, ch = fold(s, envelope("kvm1", 2, DomainLifecycle(
        node="kvm1", domain="web01", event="stopped", detail="failed", state="shutoff")))
    assert ch == {Dirty("domain", "web01")} and s.domains["kvm1"]["web01"].state == "shutoff"
    s, ch = fold(s, envelope("kvm1", 3, QuorumChanged(node="kvm1", quorate=True)))
    assert ch == {Dirty("quorum", "kvm1")} and s.quorum["kvm1"].quorate is True
    s, ch = fold(s, envelope("kvm1", 4, MountsSeen(node="kvm1", mounts=(
        Mount(mountpoint="/kvm/storage", fstype="gfs2", source="/dev/x"),
        Mount(mountpoint="/", fstype="ext4", source="/dev/vda")))))
    assert s.mounts["kvm1"] == ("/kvm/storage",)
    s = mark_stale(s, "kvm1")
    assert s.stale == {"kvm1"}
    s, ch = fold(s, envelope("kvm1", 5, Heartbeat(node="kvm1")))
    assert ch == frozenset() and s.stale == frozenset() and SourceKey("agent", "kvm1") in s.observed_at
    # libvirtd away: the node's domains become unknown (not "gone": nothing acts on absence)
    s, ch = fold(s, envelope("kvm1", 6, DomainSeen(node="kvm1", connected=False)))
    assert "kvm1" not in s.domains and ch == {Dirty("domain", "web01")}
    # a snapshot applies everything it carries
    s, ch = fold(s, envelope("kvm1", 9, Snapshot(node="kvm1", payloads=(
        DomainSeen(node="kvm1", domains=(Domain(name="db01", state="running"),)),
        QuorumChanged(node="kvm1", quorate=False)))))
    assert ch == {Dirty("domain", "db01"), Dirty("quorum", "kvm1")} and s.quorum["kvm1"].quorate is False
    _, ch = fold(s, envelope("alert:kvm1", 0, AlertReceived(kind="resource", resource="db01")))
    assert ch == {Dirty("alert", "db01")}


def test_the_alert_agent_cuts_fields_never_the_document() -> None:
    import json

    from probes.pacemaker.kvm_warden_alert import MAX_DATAGRAM, message

    env = {"CRM_alert_kind": "resource", "CRM_alert_rsc": "vm-web01", "CRM_alert_node": "kvm1",
           "CRM_alert_desc": "x" * 10_000, "CRM_alert_node_sequence": "7",
           "CRM_alert_task": "t" * 5000}
    data = message(env)
    assert len(data) <= MAX_DATAGRAM
    a = parse_alert(data)  # valid JSON, the alert is not lost
    assert (a.kind, a.resource, a.sequence) == ("resource", "vm-web01", 7)
    assert json.loads(data)["desc"].startswith("xxx")


def test_real_alert_environments_reach_the_controller_intact() -> None:
    # Environments Pacemaker 2.1.5 gave a real alert agent (tests/fixtures/alerts/capture.py).
    from probes.pacemaker.kvm_warden_alert import message

    files = sorted((FIXTURES / "alerts").glob("*.env"))
    assert {f.stem for f in files} >= {"resource-start", "resource-stop"}
    for f in files:
        env = dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
        a = parse_alert(message(env))
        assert (a.kind, a.node, a.resource, a.task, a.rc) == (
            env["CRM_alert_kind"], env["CRM_alert_node"], env["CRM_alert_rsc"],
            env["CRM_alert_task"], env["CRM_alert_rc"])
        assert a.sequence == int(env["CRM_alert_node_sequence"])


def test_failure_attributes_names_exactly_the_resources_counters_on_the_node() -> None:
    from probes.pacemaker.cib import failure_attributes

    status = b"""<status>
      <node_state uname="kvm2"><transient_attributes id="2"><instance_attributes id="status-2">
        <nvpair id="a" name="fail-count-vm-web01#monitor_5000" value="2"/>
        <nvpair id="b" name="last-failure-vm-web01#monitor_5000" value="1796106236"/>
        <nvpair id="c" name="fail-count-vm-web01#asyncmon_0" value=""/>
        <nvpair id="d" name="fail-count-vm-web010#monitor_5000" value="1"/>
        <nvpair id="e" name="fail-count-vm-web01#start_0; rm -rf /" value="1"/>
        <nvpair id="f" name="master-vm-web01" value="1"/>
      </instance_attributes></transient_attributes></node_state>
      <node_state uname="kvm1"><transient_attributes id="1"><instance_attributes id="status-1">
        <nvpair id="g" name="fail-count-vm-web01#monitor_5000" value="1"/>
      </instance_attributes></transient_attributes></node_state>
    </status>"""
    # Unset (empty) counters, another resource whose id merely starts the same, a name that is
    # not of Pacemaker's shape, and another node's counters are not named.
    assert failure_attributes(status, "vm-web01", "kvm2") == [
        "fail-count-vm-web01#monitor_5000", "last-failure-vm-web01#monitor_5000"]
    assert failure_attributes(status, "vm-web01", "kvm3") == []
