"""Out-of-band judgement: a libvirt event is Pacemaker's when one of its operations of the right
kind on that resource was running then (the CIB's lrm_rsc_op records), else out of band."""

from __future__ import annotations

import msgspec

from controller.engine.oob import judge
from controller.model.events import DomainLifecycle
from probes.pacemaker.cib import parse_operations

# The status section as Pacemaker writes it: a finished start on kvm1 (last-rc-change is when
# it ended, exec-time its length), a pending stop on kvm2 (op-status -1, call-id -1,
# record-pending), a recurring monitor (ignored), and a finished migrate_to on kvm1.
CIB = b"""<cib epoch="1" num_updates="1" admin_epoch="0"><configuration/><status>
<node_state id="1" uname="kvm1"><lrm id="1"><lrm_resources>
 <lrm_resource id="vm-web01" type="VirtualDomain" class="ocf" provider="heartbeat">
  <lrm_rsc_op id="vm-web01_last_0" operation="start" call-id="12" rc-code="0" op-status="0"
   interval="0" last-rc-change="1000" exec-time="800" queue-time="0"/>
  <lrm_rsc_op id="vm-web01_monitor_5000" operation="monitor" call-id="13" rc-code="0"
   op-status="0" interval="5000" last-rc-change="1001" exec-time="40"/>
 </lrm_resource>
 <lrm_resource id="vm-db01" type="VirtualDomain" class="ocf" provider="heartbeat">
  <lrm_rsc_op id="vm-db01_last_0" operation="migrate_to" call-id="20" rc-code="0" op-status="0"
   interval="0" last-rc-change="2003" exec-time="2800"/>
 </lrm_resource>
</lrm_resources></lrm></node_state>
<node_state id="2" uname="kvm2"><lrm id="2"><lrm_resources>
 <lrm_resource id="vm-web02" type="VirtualDomain" class="ocf" provider="heartbeat">
  <lrm_rsc_op id="vm-web02_last_0" operation="stop" call-id="-1" rc-code="193" op-status="-1"
   interval="0" last-rc-change="3000" exec-time="0"/>
 </lrm_resource>
 <lrm_resource id="bad" type="VirtualDomain" class="ocf" provider="heartbeat">
  <lrm_rsc_op id="bad_last_0" operation="stop" call-id="x" op-status="0" interval="0"/>
 </lrm_resource>
</lrm_resources></lrm></node_state>
</status></cib>"""
OPS = parse_operations(CIB)


def ev(node: str, domain: str, event: str, detail: str) -> DomainLifecycle:
    return DomainLifecycle(node=node, domain=domain, event=event, detail=detail)


def test_the_status_section_is_read_one_shot_operations_only() -> None:
    assert sorted((o.resource, o.node, o.task, o.op_status) for o in OPS) == [
        ("vm-db01", "kvm1", "migrate_to", 0), ("vm-web01", "kvm1", "start", 0),
        ("vm-web02", "kvm2", "stop", -1)]


def test_pacemakers_own_changes_are_explained() -> None:
    assert judge(ev("kvm1", "web01", "started", "booted"), 999.6, "vm-web01", OPS) is True
    # libvirt resumes the CPUs of the QEMU it started (observed on the lab's recoveries).
    assert judge(ev("kvm1", "web01", "resumed", "unpaused"), 999.7, "vm-web01", OPS) is True
    assert judge(ev("kvm2", "web02", "stopped", "shutdown"), 3004.0, "vm-web02", OPS) is True
    # A live migration's events happen on both nodes during migrate_to (on the source).
    assert judge(ev("kvm2", "db01", "started", "migrated"), 2001.0, "vm-db01", OPS) is True
    assert judge(ev("kvm1", "db01", "stopped", "migrated"), 2003.2, "vm-db01", OPS) is True


def test_changes_no_operation_explains_are_out_of_band() -> None:
    # virsh destroy long after the start; on another node than the pending stop; a pause or a
    # resume (VirtualDomain never pauses a guest); a start on kvm2 where nothing started it.
    assert judge(ev("kvm1", "web01", "stopped", "destroyed"), 1500.0, "vm-web01", OPS) is False
    assert judge(ev("kvm1", "web02", "stopped", "destroyed"), 3004.0, "vm-web02", OPS) is False
    assert judge(ev("kvm1", "web01", "suspended", "paused"), 1000.0, "vm-web01", OPS) is False
    assert judge(ev("kvm1", "web01", "resumed", "unpaused"), 1500.0, "vm-web01", OPS) is False
    assert judge(ev("kvm2", "web01", "started", "booted"), 1000.0, "vm-web01", OPS) is False
    # A migration by hand: no migrate_to of vm-web01 anywhere.
    assert judge(ev("kvm2", "web01", "started", "migrated"), 1000.0, "vm-web01", OPS) is False


def test_faults_are_not_judged() -> None:
    for event, detail in (("stopped", "failed"), ("stopped", "crashed"),
                          ("suspended", "ioerror"), ("suspended", "watchdog"), ("reboot", "")):
        assert judge(ev("kvm1", "web01", event, detail), 1500.0, "vm-web01", OPS) is None


def test_the_cib_reader_keeps_the_live_migrations_of_the_status_section() -> None:
    from probes.pacemaker.cib import parse_cib

    cib = CIB.replace(b"<configuration/>", b"<configuration><crm_config/><nodes/><resources/>"
                                           b"<constraints/></configuration>")
    cib = cib.replace(b'operation="migrate_to" call-id="20"',
                      b'operation="migrate_to" migrate_source="kvm1" migrate_target="kvm2" '
                      b'call-id="20"')
    assert parse_cib(cib).migrations == (("vm-db01", "kvm1", "kvm2"),)
    (op,) = [o for o in parse_operations(cib) if o.task == "migrate_to"]
    assert (op.migrate_source, op.migrate_target) == ("kvm1", "kvm2")


def test_an_operation_seen_pending_earlier_still_explains_its_events() -> None:
    """VirtualDomain's stop gives up on a graceful shutdown and destroys the guest at the end of
    its timeout; the start that follows replaces the stop's record a moment later (observed on
    the lab). The stop seen pending before explains the destroy, not what comes after it."""
    (stop,) = [o for o in OPS if o.task == "stop"]  # pending on kvm2 since 3000
    destroy = ev("kvm2", "web02", "stopped", "destroyed")
    assert judge(destroy, 3086.0, "vm-web02", (), {stop: 3086.1}) is True
    assert judge(destroy, 3200.0, "vm-web02", (), {stop: 3086.1}) is False


def test_the_watcher_judges_a_burst_with_one_read_and_merges_one_actions_events(
        tmp_path: object) -> None:

    from controller.engine.audit import AuditLog
    from controller.engine.oob import OutOfBandWatcher
    from controller.model.context import OutOfBandChange
    from controller.model.events import envelope
    from tests.waiting import wait_for

    reads: list[int] = []
    found: list[OutOfBandChange] = []
    vms = {"web01": "vm-web01", "web02": "vm-web02"}  # the cluster's VMs (model/vms.py)

    def query() -> bytes:
        reads.append(1)
        return CIB

    w = OutOfBandWatcher(query=query, vms=lambda: vms, audit=AuditLog(None),
                         found=found.append)
    # virsh shutdown of web01 (two events, one action) at 1500, web02's pending stop on kvm2
    # explaining its destroy at 3004, and a domain kvm-warden does not watch.
    for node, dom, event, detail, at in (
            ("kvm1", "web01", "shutdown", "finished", 1500.0),
            ("kvm1", "web01", "stopped", "shutdown", 1500.5),
            ("kvm2", "web02", "stopped", "destroyed", 3004.0),
            ("kvm1", "other", "stopped", "destroyed", 1500.0)):
        env = envelope(node, 1, DomainLifecycle(node=node, domain=dom, event=event,
                                                detail=detail))
        w.offer(msgspec.structs.replace(env, sent_at=at))
    w.start()
    try:
        wait_for("the burst judged", lambda: w.judged == 4, 5, 0.02)
        assert w.errors == 0
        assert [(c.vm, c.node, c.what) for c in found] == [("web01", "kvm1", "shutdown/finished")]
        assert len(reads) == 1
    finally:
        w.stop()


def test_a_stop_seen_pending_then_gone_explains_the_destroy_at_its_end() -> None:
    """The lab's case: VirtualDomain's stop waits 85 s for a graceful shutdown, destroys the
    guest, ends; the start that follows replaces its record 16 ms later. The watcher saw the
    stop pending (poked by crm_mon's "Stopping"), then a read found it gone."""
    import time

    from controller.engine.audit import AuditLog
    from controller.engine.oob import OutOfBandWatcher
    from controller.model.context import OutOfBandChange
    from controller.model.events import envelope
    from tests.waiting import wait_for

    stop_pending = CIB
    start_pending = CIB.replace(b'operation="stop" call-id="-1" rc-code="193" op-status="-1"\n'
                                b'   interval="0" last-rc-change="3000"',
                                b'operation="start" call-id="-1" rc-code="193" op-status="-1"\n'
                                b'   interval="0" last-rc-change="3086"')
    assert start_pending != stop_pending
    reads = [stop_pending]
    found: list[OutOfBandChange] = []
    vms = {"web02": "vm-web02"}
    w = OutOfBandWatcher(query=lambda: reads[-1], vms=lambda: vms,
                         audit=AuditLog(None), found=found.append)
    w.start()
    try:
        w.poke()
        wait_for("the stop seen pending", lambda: w._open, 5, 0.02)
        reads.append(start_pending)
        env = envelope("kvm2", 1, DomainLifecycle(node="kvm2", domain="web02", event="stopped",
                                                  detail="destroyed"))
        w.offer(msgspec.structs.replace(env, sent_at=time.time()))  # now: within the stop
        wait_for("judged", lambda: w.judged == 1, 5, 0.02)
        assert w.errors == 0 and w._ended  # judged without failing, the stop seen ended
        assert found == []
    finally:
        w.stop()


def test_a_failing_judge_is_counted_and_the_watcher_lives_on() -> None:
    from controller.engine.audit import AuditLog
    from controller.engine.oob import OutOfBandWatcher
    from controller.model.events import envelope
    from tests.waiting import wait_for

    def broken() -> dict[str, str]:
        raise RuntimeError("the VM map is gone")

    w = OutOfBandWatcher(query=lambda: CIB, vms=broken, audit=AuditLog(None),
                         found=lambda c: None)
    w.start()
    try:
        for n in (1, 2):
            w.offer(envelope("kvm1", n, DomainLifecycle(node="kvm1", domain="web01",
                                                        event="stopped", detail="destroyed")))
            wait_for(f"failure {n} counted", lambda n=n: w.errors == n, 5, 0.02)  # type: ignore[misc]
        assert w.judged == 0
    finally:
        w.stop()


def test_qemu_10s_shutdown_host_at_the_end_of_a_live_migration_is_the_migrations() -> None:
    """On Debian 13 (QEMU 10, libvirt 11) the source of a live migration reports shutdown/host
    when libvirt quits it, before stopped/migrated (seen on the lab of Debian 13 nodes: every
    migration was reported out of band). During a migrate_to it is Pacemaker's; with nothing
    running it is still out of band, and shutdown/guest is still only a stop's."""
    assert judge(ev("kvm1", "db01", "shutdown", "host"), 2003.2, "vm-db01", OPS) is True
    assert judge(ev("kvm1", "db01", "shutdown", "host"), 2500.0, "vm-db01", OPS) is False
    assert judge(ev("kvm1", "db01", "shutdown", "guest"), 2003.2, "vm-db01", OPS) is False
    assert judge(ev("kvm2", "web02", "shutdown", "host"), 3004.0, "vm-web02", OPS) is True
