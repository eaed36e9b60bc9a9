"""The soak's checker judges by itself: its verdicts on hand-made timelines, and its reading of
real crm_mon/CIB documents."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import threading
from pathlib import Path

from lab import chaos, checker, soak_report
from lab.checker import Counts, Health, Proc, Samples, Usage, View
from tests.waiting import wait_for

NODES = ("kvm1", "kvm2", "kvm3")
ALL = frozenset(NODES)


def view(at: float, node: str, dc: str | None = "kvm1", online: frozenset[str] = ALL,
         **kw: object) -> View:
    base: dict[str, object] = dict(quorate=True, unclean=(), fencing=False, maintenance=False,
                                   epoch=(0, 10), owned=frozenset(), multi_active=())
    base.update(kw)
    return View(at=at, node=node, dc=dc, online=online, **base)  # type: ignore[arg-type]


def stamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


T0 = 1_800_000_000.0


def test_a_guest_on_two_nodes_past_the_switch_over_is_a_violation_once() -> None:
    s = Samples()
    both = [Proc(0, "web01", "kvm1", 10, False), Proc(0, "web01", "kvm2", 11, False)]
    for at, procs in [(0.0, both), (1.0, both), (1.5, both[1:]),   # a migration's switch-over
                      (2.0, both), (3.0, both), (4.5, both), (9.0, both)]:
        s.proc_times.append(at)
        s.procs.append(procs)
    found = checker.twice(s)
    assert len(found) == 1 and found[0][0] == 2.0
    assert "web01 ran on kvm1, kvm2 at once" in found[0][1]
    # The -incoming target of a live migration is not a second run.
    s2 = Samples(procs=[[both[0], Proc(0, "web01", "kvm2", 11, True)]] * 30,
                 proc_times=[float(i) for i in range(30)])
    assert checker.twice(s2) == []


def test_a_guest_stopped_or_started_cold_is_a_restart_a_live_migration_is_not() -> None:
    """The rolling upgrade's judge: every new qemu process of a guest is an -incoming target."""
    src, dst = Proc(0, "web01", "kvm1", 10, False), Proc(0, "web01", "kvm2", 11, True)
    live = Samples(procs=[[src], [src, dst], [dst], [dst]], proc_times=[0.0, 1.0, 2.0, 3.0])
    assert checker.restarts(live, ["web01"]) == ([], 1)
    cold = Samples(procs=[[src], [], [Proc(0, "web01", "kvm2", 12, False)]],
                   proc_times=[0.0, 1.0, 2.0])
    found, migrations = checker.restarts(cold, ["web01"])
    assert [w for _, w in found] == ["web01 had no qemu process",
                                     "web01 started cold on kvm2 (pid 12)"]
    assert migrations == 0


def test_two_dcs_in_one_partition_only_past_an_elections_grace() -> None:
    split = [v for t in range(0, 30) for v in (
        view(float(t), "kvm1", dc="kvm1"), view(float(t) + 0.1, "kvm2", dc="kvm2"),
        view(float(t) + 0.2, "kvm3", dc="kvm1"))]
    found = checker.one_dc_per_partition(split)
    assert len(found) == 1 and "two DCs in one partition" in found[0][1]
    assert "kvm2 says kvm2" in found[0][1]
    short = [view(float(t), "kvm2", dc="kvm2" if t < 5 else "kvm1") for t in range(30)] + \
        [view(float(t) + 0.1, "kvm1") for t in range(30)]
    assert checker.one_dc_per_partition(short) == []
    # Two partitions that do not see each other may each have a DC: that is not one partition.
    apart = [v for t in range(30) for v in (
        view(float(t), "kvm1", online=frozenset({"kvm1", "kvm2"})),
        view(float(t) + 0.1, "kvm3", dc="kvm3", online=frozenset({"kvm3"})))]
    assert checker.one_dc_per_partition(apart) == []


def test_the_cib_must_agree_between_nodes_once_settled() -> None:
    differ = [v for t in range(30) for v in (
        view(float(t), "kvm1"), view(float(t) + 0.1, "kvm2"),
        view(float(t) + 0.2, "kvm3", epoch=(0, 9)))]
    found = checker.cib_agrees(differ, NODES)
    assert found and "kvm3 (0, 9)" in found[0][1]
    # While kvm3 is outside the partition, its older CIB is no disagreement.
    cut = [v for t in range(30) for v in (
        view(float(t), "kvm1", online=frozenset({"kvm1", "kvm2"})),
        view(float(t) + 0.1, "kvm2", online=frozenset({"kvm1", "kvm2"})),
        view(float(t) + 0.2, "kvm3", dc="kvm3", online=frozenset({"kvm3"}), epoch=(0, 9)))]
    assert checker.cib_agrees(cut, NODES) == []


def test_a_resource_active_on_several_nodes_past_a_recovery() -> None:
    views = [view(float(t), "kvm1", multi_active=("vm-web01",) if t >= 3 else ())
             for t in range(20)]
    found = checker.multi_active(views)
    assert len(found) == 1 and found[0][0] == 3.0
    assert checker.multi_active(views[:10]) == []


def test_a_guest_started_where_there_is_no_quorum() -> None:
    s = Samples(proc_times=[0.0, 1.0, 2.0],
                procs=[[], [Proc(1.0, "db01", "kvm3", 42, False)],
                       [Proc(2.0, "db01", "kvm3", 42, False)]],
                views=[view(0.5, "kvm3", quorate=False), view(1.5, "kvm3", quorate=False)])
    assert checker.started_without_quorum(s) == [
        (1.0, "db01 started on kvm3 while kvm3 had no quorum")]
    s.views = [view(0.5, "kvm3"), view(1.5, "kvm3")]
    assert checker.started_without_quorum(s) == []


def test_a_change_applied_while_unsafe_is_a_violation() -> None:
    rec = {"outcome": "applied", "action": "location x", "at": stamp(T0)}
    for kw, why in [({"quorate": False}, "no quorum"), ({"unclean": ("kvm3",)}, "unclean: kvm3"),
                    ({"fencing": True}, "fencing pending"),
                    ({"maintenance": True}, "maintenance mode")]:
        views = [view(T0 - 0.5, "kvm1", **kw), view(T0 + 0.5, "kvm1", **kw)]
        assert checker.unsafe_changes([rec], views, "kvm1", T0 - 10) == [
            (T0, f"location x applied while Pacemaker said {why}")]
    fine = [view(T0 - 0.5, "kvm1"), view(T0 + 0.5, "kvm1")]
    assert checker.unsafe_changes([rec], fine, "kvm1", T0 - 10) == []
    bad = [view(T0, "kvm1", quorate=False)]
    assert checker.unsafe_changes([{**rec, "outcome": "refused"}], bad, "kvm1", 0.0) == []
    assert checker.unsafe_changes([rec], bad, "kvm1", T0 + 10) == []  # before the soak began
    assert checker.unsafe_changes([rec], bad, "kvm2", 0.0) == []  # another node's view


def test_every_owned_constraint_that_changes_has_an_audit_record() -> None:
    views = [view(T0, "kvm1"), view(T0 + 5, "kvm1", owned=frozenset({"warden-prefer-vm-web01"})),
             view(T0 + 9, "kvm1", owned=frozenset())]
    added = {"outcome": "applied", "at": stamp(T0 + 3),
             "after": '<rsc_location id="warden-prefer-vm-web01"/>'}
    removed = {"outcome": "applied", "at": stamp(T0 + 8), "kind": "RemoveConstraint",
               "action": "remove constraint warden-prefer-vm-web01"}
    assert checker.unaudited_changes([added, removed], views, "kvm1", T0) == []
    assert checker.unaudited_changes([added], views, "kvm1", T0) == [
        (T0 + 9, "warden-prefer-vm-web01 removed in the CIB with no audit record")]
    late = {**added, "at": stamp(T0 + 5 - checker.AUDIT_WINDOW - 5)}
    assert [w for _, w in checker.unaudited_changes([late, removed], views, "kvm1", 0.0)] == [
        "warden-prefer-vm-web01 added in the CIB with no audit record"]


def test_healthz_must_tell_the_truth() -> None:
    s = Samples(starts=[0.0])
    s.health = [Health(float(t), True, t < 100) for t in range(0, 130)]
    found = checker.health_truth(s)
    assert len(found) == 1 and found[0][0] == 100.0
    s.health = [Health(200.0, False, True)]
    assert checker.health_truth(s) == [(200.0, "/healthz said ok while the controller was "
                                        "stopped")]
    s.health = [Health(float(t), True, t > 30) for t in range(0, 60)]  # a start's grace
    assert checker.health_truth(s) == []


def test_memory_and_threads_stay_bounded_per_process() -> None:
    s = Samples(usage=[Usage(float(t), 7, 100_000 + t * 10, 20) for t in range(0, 600, 5)])
    assert checker.bounded_usage(s) == []
    s.usage += [Usage(700.0, 7, 400_000, 40)]
    assert [w for _, w in checker.bounded_usage(s)] == [
        "controller 7: RSS grew from 100900 kB to 400000 kB",
        "controller 7: threads grew from 20 to 40"]


def test_records_never_go_backwards_and_the_ledger_always_parses() -> None:
    s = Samples(counts=[Counts(0, 3, 10, True), Counts(1, 5, 12, True), Counts(2, 4, None, True),
                        Counts(3, 4, 11, False), Counts(4, 6, 13, False), Counts(5, 7, 14, True)])
    assert checker.nothing_lost(s) == [(2, "audit records went from 5 to 4"),
                                       (3, "history rows went from 12 to 11"),
                                       (3, "the ledger did not parse")]


def test_a_fault_that_touched_a_vm_must_be_in_the_history() -> None:
    rows = [(T0 + 4, "web01")]
    assert checker.in_history([(T0, "web01")], rows) == []
    assert checker.in_history([(T0, "web02")], rows) == [
        (T0, "web02: no history event after the fault")]


def test_pacemakers_documents_are_read_into_a_view() -> None:
    crm_mon = """<pacemaker-result api-version="2.25" request="crm_mon">
<summary><current_dc present="true" version="2" name="kvm2" id="2" with_quorum="true"/>
<cluster_options maintenance-mode="true"/></summary>
<nodes><node name="kvm1" id="1" online="true" unclean="false"/>
<node name="kvm2" id="2" online="true" unclean="false"/>
<node name="kvm3" id="3" online="false" unclean="true"/></nodes>
<resources><clone id="dlm-clone"><resource id="dlm" nodes_running_on="1"/></clone>
<resource id="vm-web01" role="Started" nodes_running_on="2"/>
<resource id="vm-web02" role="Migrating" nodes_running_on="2"/></resources>
<fence_history><fence_event status="pending" target="kvm3" action="reboot"/></fence_history>
</pacemaker-result>"""
    cib = """<cib admin_epoch="1" epoch="42" num_updates="7"><configuration><constraints>
<rsc_location id="warden-prefer-vm-web01" rsc="vm-web01"><rule id="warden-prefer-vm-web01-r"/>
</rsc_location><rsc_location id="cli-prefer-vm-web02" rsc="vm-web02"/></constraints>
</configuration></cib>"""
    v = checker.parse_view("kvm1", 1.0, crm_mon, cib)
    assert v is not None
    assert (v.dc, v.quorate, v.online, v.unclean) == ("kvm2", True, frozenset({"kvm1", "kvm2"}),
                                                      ("kvm3",))
    assert v.fencing and v.maintenance and v.unsafe == "unclean: kvm3"
    assert v.epoch == (1, 42) and v.owned == frozenset({"warden-prefer-vm-web01"})
    assert v.multi_active == ("vm-web01",)
    assert checker.parse_view("kvm1", 1.0, "<broken", None) is None


def test_every_kind_comes_first_once_then_at_random() -> None:
    kind_of = chaos.schedule(random.Random(1), chaos.FAULTS)
    first = [kind_of(i) for i in range(len(chaos.FAULTS))]
    assert sorted(first) == sorted(chaos.FAULTS)
    assert all(kind_of(i) in chaos.FAULTS for i in range(100, 120))


def test_the_desired_file_the_nemesis_writes(tmp_path: Path) -> None:
    from controller.model.desired import load_desired

    d = chaos.Desired(tmp_path / "d.yaml")
    d.drained, d.db01_stopped = "kvm3", True
    d.write()
    spec = load_desired(d.path)
    assert spec.cluster.node_names() == NODES
    assert spec.cluster.node_states() == {"kvm3": "standby"}
    assert {v.name: v.state for v in spec.vms}["db01"] == "stopped"


def test_the_report_is_json_and_a_page_without_external_assets(tmp_path: Path) -> None:
    r = chaos.Report(seed=7, minutes=1, started=T0, ended=T0 + 60)
    r.faults = [chaos.Fault("kill-guest", "web01", T0 + 1, ["web01"], T0 + 5, T0 + 9, True),
                chaos.Fault("kill-guest", "web02", T0 + 20, ["web02"], T0 + 25, T0 + 40, True),
                chaos.Fault("partition", "kvm2", T0 + 30, [], T0 + 35, None, False)]
    r.violations = [(T0 + 31, "a thing")]
    r.samples.usage = [Usage(T0 + t, 1, 90_000 + t, 20) for t in range(0, 60, 5)]
    r.applied = [T0 + 6]
    j, h = soak_report.write(r, tmp_path)
    d = json.loads(j.read_text())
    # Recoveries 4 s and 15 s: p95 by linear interpolation, 4 + 0.95 * 11 = 14.45 (to 0.1 s).
    assert d["by_kind"]["kill-guest"] == {"count": 2, "waited": 2, "recovered": 2,
                                          "p50_s": 9.5, "p95_s": 14.4, "max_s": 15.0,
                                          "outage_p50_s": 14.0, "outage_max_s": 20.0}
    assert d["violations"] == [{"t_s": 31.0, "what": "a thing",
                                "reproduce": "make soak SEED=7 MINUTES=1"}]
    assert d["controller"]["rss_kb_first"] == 90_000 and d["controller"]["rss_kb_last"] == 90_055
    page = h.read_text()
    assert "<svg" in page and "a thing" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_metrics_must_say_when_the_desired_file_is_invalid() -> None:
    from lab.checker import Valid

    s = Samples(valid=[Valid(float(t), not 10 <= t < 45) for t in range(0, 80)])
    assert checker.says_invalid(s, [(10.0, 40.0)]) == []
    s.valid = [Valid(float(t), True) for t in range(0, 80)]  # it never noticed
    assert [w for _, w in checker.says_invalid(s, [(10.0, 40.0)])] == [
        "/metrics said the desired file was valid while it was not"]
    s.valid = [Valid(float(t), t < 10) for t in range(0, 80)]  # it never recovered
    assert [w for _, w in checker.says_invalid(s, [(10.0, 40.0)])] == [
        "/metrics still said the desired file was invalid once it was fixed"]


def test_a_fault_near_a_controller_outage_is_not_judged_against_the_history() -> None:
    r = chaos.Report(seed=1, minutes=1)
    r.faults = [chaos.Fault("stop-controller", "kvm1", 100.0, healed=140.0)]
    assert chaos.controller_down(r, 90.0, 120.0)
    assert chaos.controller_down(r, 150.0, 180.0)  # within the grace after the resume
    assert not chaos.controller_down(r, 160.0, 190.0)
    assert not chaos.controller_down(r, 0.0, 99.0)


def test_a_drain_is_lifted_by_declaring_the_node_online(tmp_path: Path) -> None:
    """Removing the declaration would leave the node in standby (a plain name declares no
    state): the nemesis lifts a drain the way the README says."""
    from controller.model.desired import load_desired

    d = chaos.Desired(tmp_path / "d.yaml")
    d.drained, d.lifted = None, "kvm3"
    d.write()
    assert load_desired(d.path).cluster.node_states() == {"kvm3": "online"}


def test_the_checker_reads_a_live_history_and_audit(tmp_path: Path) -> None:
    """The state files as the controller writes them (sqlite in WAL mode, still open; JSON
    lines with a torn one), read without kvm-warden's readers."""
    from controller.engine.audit import AuditLog, AuditRecord, audit_time
    from controller.engine.history import Event, History

    h = History(tmp_path / "history.sqlite")
    h.add([Event(at=T0, kind="lifecycle", vm="web01"), Event(at=T0 + 1, kind="move", vm="db01")])
    AuditLog(tmp_path).write([AuditRecord(at=audit_time(T0), who="service", outcome="applied",
                                          action="a", kind="SetMeta", reconciler="r", why="w")])
    with open(tmp_path / "audit.jsonl", "ab") as f:
        f.write(b'{"at": "torn')
    assert checker.state_counts(tmp_path) == (1, 2, None)
    assert sorted(checker.history_rows(tmp_path)) == [(T0, "web01"), (T0 + 1, "db01")]
    h.close()


def test_every_setting_that_changes_has_an_audit_record() -> None:
    standby = ("nodes-3-standby", "on")
    views = [view(T0, "kvm1"), view(T0 + 5, "kvm1", settings=frozenset({standby}))]
    rec = {"outcome": "applied", "at": stamp(T0 + 4), "kind": "SetNodeAttribute",
           "after": '<nvpair id="nodes-3-standby" name="standby" value="on"/>'}
    assert checker.unaudited_changes([rec], views, "kvm1", T0) == []
    assert checker.unaudited_changes([], views, "kvm1", T0) == [
        (T0 + 5, "setting nodes-3-standby: None -> on in the CIB with no audit record")]


def test_pacemakers_own_properties_are_not_settings() -> None:
    cib = """<cib admin_epoch="0" epoch="3"><configuration><crm_config>
<cluster_property_set id="o"><nvpair id="o-dc" name="dc-version" value="2.1.5"/>
<nvpair id="o-nqp" name="no-quorum-policy" value="freeze"/></cluster_property_set></crm_config>
</configuration><status><node_state id="1"><transient_attributes id="1">
<instance_attributes id="s"><nvpair id="s-x" name="shutdown" value="0"/></instance_attributes>
</transient_attributes></node_state></status></cib>"""
    mon = ('<pacemaker-result><summary><current_dc present="true" name="kvm1" '
           'with_quorum="true"/></summary><nodes/></pacemaker-result>')
    v = checker.parse_view("kvm1", 0.0, mon, cib)
    assert v is not None and v.settings == frozenset({("o-nqp", "freeze")})


def test_virtualdomains_own_utilization_is_not_a_setting() -> None:
    """Found by the soak's other-release fault: on Debian 13 VirtualDomain writes cpu,
    hv_memory and host_memory into a VM's utilization when it starts or arrives."""
    cib = """<cib admin_epoch="0" epoch="3"><configuration><resources>
<primitive id="vm-db01" class="ocf" provider="heartbeat" type="VirtualDomain">
<utilization id="vm-db01-utilization"><nvpair id="u-cpu" name="cpu" value="1"/>
<nvpair id="u-hv" name="hv_memory" value="64"/><nvpair id="u-host" name="host_memory" value="64"/>
<nvpair id="u-mem" name="memory" value="128"/></utilization>
<meta_attributes id="m"><nvpair id="m-t" name="target-role" value="Started"/></meta_attributes>
</primitive></resources></configuration></cib>"""
    mon = ('<pacemaker-result><summary><current_dc present="true" name="kvm1" '
           'with_quorum="true"/></summary><nodes/></pacemaker-result>')
    v = checker.parse_view("kvm1", 0.0, mon, cib)
    assert v is not None and v.settings == frozenset({("u-mem", "128"), ("m-t", "Started")})


def test_a_zombie_has_no_usage_and_a_failing_sample_does_not_stop_the_sampler(
        tmp_path: Path) -> None:
    # a killed controller not yet reaped: /proc/PID/status has no VmRSS line
    child = subprocess.Popen(["true"])
    wait_for("a zombie", lambda: "State:\tZ" in Path(f"/proc/{child.pid}/status").read_text(), 10)
    assert checker.process_usage(child.pid) is None
    child.wait()
    assert checker.process_usage(os.getpid()) is not None
    # a step that fails (its own bug) is recorded for the judge, and the sampling goes on
    sampler = checker.Sampler(tmp_path, lambda: (None, False))
    calls: list[int] = []

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise KeyError("VmRSS")
        if len(calls) == 2:
            raise subprocess.TimeoutExpired("crm_mon", 15)  # a lab in turmoil: no sample

    runner = threading.Thread(target=sampler._every, args=(0.01, step))
    runner.start()
    wait_for("three samples", lambda: len(calls) >= 3, 10)
    sampler.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert [e.splitlines()[-1] for _, e in sampler.samples.errors] == ["KeyError: 'VmRSS'"]
