"""The faults operators of this stack meet, on the real lab with real fencing (lab/bmc.py and
lab/fence_kvmlab.py): paused guests, virsh behind the cluster's back, a partitioned node that
the majority fences, and one that cannot be fenced.

Each scenario stands alone: it waits for the converged layout first and leaves the cluster
converged. Times are printed (pytest -s) and reported in the issue notes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab import lab
from tests.e2e.conftest import Lab, audits, converged, findings, metric, out_of_band, status
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def node_of(vm: str) -> str:
    return lab.vms_running()[f"vm-{vm}"][0]


def virsh(node: str, *args: str) -> None:
    lab.on(node, "virsh", "-c", "qemu:///system", *args)


class Sampler:
    """Every 0.1 s, which node has a qemu process for which guest (from /proc)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, list[str]]]] = []
        self._stop = threading.Event()
        self._ids = lab.netns_ids()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), lab.guests_by_node(self._ids)))
            self._stop.wait(0.1)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def twice(self) -> list[tuple[float, str, list[str]]]:
        return [(t, g, nodes) for t, s in self.samples for g, nodes in s.items() if len(nodes) > 1]

    def placements(self, guest: str) -> list[str]:
        """The nodes the guest ran on, in order, consecutive repeats folded."""
        seq: list[str] = []
        for _, s in self.samples:
            for node in s.get(guest, []):
                if not seq or seq[-1] != node:
                    seq.append(node)
        return seq


def test_virsh_suspend_is_a_paused_finding_within_seconds_and_resume_clears_it(
        cluster: Lab) -> None:
    wait_for("converged", converged, 120)
    node = node_of("web01")
    t0 = time.monotonic()
    virsh(node, "suspend", "web01")
    try:
        wait_for("the paused finding", lambda: findings("domain web01 is paused"), 10, 0.1)
        seen = time.monotonic() - t0
        print(f"virsh suspend -> paused finding: {seen:.2f} s")
        assert seen <= 3.0, f"paused finding after {seen:.1f} s"
        (msg,) = findings("domain web01 is paused")
        assert f"paused on {node} (user)" in msg
        assert metric("kvm_warden_vm_paused", vm="web01", node=node, reason="user") == 1
        row = next(r for r in status()["vms"] if r["vm"] == "web01")
        assert row["state"] == "Started" and {"node": node, "state": "paused",
                                                "reason": "user"} in row["libvirt"]
        # Pacemaker's monitor saw nothing wrong: no failure, no recovery.
        assert lab.vms_running()["vm-web01"] == [node]
    finally:
        virsh(node, "resume", "web01")
    wait_for("the finding cleared", lambda: not findings("domain web01 is paused"), 10, 0.1)
    assert metric("kvm_warden_vm_paused", vm="web01", node=node, reason="user") is None
    # A suspend behind the cluster's back is also out of band (one record for the pair).
    assert out_of_band("web01"), "virsh suspend/resume was not recorded as out of band"


def test_on_pause_restart_has_pacemaker_restart_a_paused_vm_once(cluster: Lab) -> None:
    wait_for("converged", converged, 120)
    node = node_of("web02")
    ((_, paused_pid),) = lab.guest_processes()["web02"]
    acted, oob = len(audits()), len(out_of_band("web02"))
    generation = metric("kvm_warden_desired_state_generation") or 0
    cluster.write_desired(policy="  on_pause: restart\n")
    try:
        wait_for("the controller loaded on_pause: restart", lambda: (metric(
            "kvm_warden_desired_state_generation") or 0) > generation, 20)
        t0 = time.monotonic()
        virsh(node, "suspend", "web02")
        # Past the grace, kvm-warden marks the resource failed there; Pacemaker's recovery
        # (VirtualDomain stop = destroy with force_stop, then start) gives a new, running qemu.
        wait_for("web02 restarted by Pacemaker", lambda: any(
            pid != paused_pid for _, pid in lab.guest_processes().get("web02", []))
            and lab.vm_roles().get("vm-web02") == "Started"
            and not findings("domain web02 is paused"), 60, 0.2)
        print(f"virsh suspend -> restarted by Pacemaker (on_pause: restart): "
              f"{time.monotonic() - t0:.1f} s")
        fails = [a for a in audits()[acted:] if a["action"].startswith("fail vm-web02")]
        assert [a["action"] for a in fails] == [f"fail vm-web02 on {node} (Pacemaker recovers it)"]
        assert fails[0]["outcome"] == "applied"
        ((_, pid),) = lab.guest_processes()["web02"]
        state = lab.on(lab.vms_running()["vm-web02"][0], "virsh", "-c", "qemu:///system",
                       "domstate", "web02").stdout.strip()
        assert state == "running", state
        time.sleep(5)  # a later pass must not fail it again: the new guest is not paused
        assert len([a for a in audits()[acted:] if a["action"].startswith("fail vm-web02")]) == 1
        assert [p for _, p in lab.guest_processes()["web02"]] == [pid]
        # The suspend was behind the cluster's back; the stop and start it led to were not.
        assert [r["action"] for r in out_of_band("web02")[oob:]] == \
            [f"suspended/paused of web02 on {node}"]  # libvirt: SUSPENDED_PAUSED
    finally:
        cluster.write_desired()
        for n, _ in lab.guest_processes().get("web02", []):
            lab.on(n, "virsh", "-c", "qemu:///system", "resume", "web02", check=False)
    wait_for("converged", converged, 120)


def test_virsh_destroy_is_one_out_of_band_record_that_outlives_the_recovery(
        cluster: Lab) -> None:
    wait_for("converged", converged, 120)
    node = node_of("web02")
    before = len(out_of_band("web02"))
    acted = len(audits())
    alerts = metric("kvm_warden_bus_events_total", kind="AlertReceived") or 0
    t0 = time.monotonic()
    virsh(node, "destroy", "web02")
    wait_for("an out-of-band record", lambda: len(out_of_band("web02")) > before, 15, 0.1)
    print(f"virsh destroy -> out_of_band record: {time.monotonic() - t0:.2f} s")
    (rec,) = out_of_band("web02")[before:]
    # QEMU killed by the host reports shutdown/host, then libvirt stopped/destroyed: one burst,
    # one record, named by its first event.
    assert rec["action"] in (f"shutdown/host of web02 on {node}",
                             f"stopped/destroyed of web02 on {node}")
    assert rec["outcome"] == "observed" and rec["who"] == "out-of-band"
    # Pacemaker's monitor notices and recovers the VM (its own stop and start are not out of
    # band); kvm-warden later cleans the fail-count. The record and the finding stay.
    wait_for("Pacemaker recovered web02", lambda: len(lab.vms_running().get("vm-web02", [])) == 1
             and lab.guests_by_node().get("web02"), 120)
    # kvm-warden cleans the fail-count once the VM runs again; that must not make Pacemaker
    # restart it (it did, before cleanups took the migration source's history along).
    (recovered,) = lab.guest_processes()["web02"]
    # Pacemaker ran its alert agent on the VM's node; that node's kvm-warden agent published
    # the alerts on the bus (the controller on kvm1 has no alert socket of its own in the lab).
    assert node != "kvm1"
    assert (metric("kvm_warden_bus_events_total", kind="AlertReceived") or 0) > alerts
    wait_for("kvm-warden's cleanup", lambda: any(
        a["action"].startswith("cleanup vm-web02") for a in audits()[acted:]), 120)
    time.sleep(10)
    assert lab.guest_processes()["web02"] == [recovered], "the cleanup restarted web02"
    assert lab.vms_running()["vm-web02"] == [recovered[0]]
    wait_for("converged", converged, 120)
    assert len(out_of_band("web02")) == before + 1, out_of_band("web02")[before:]
    assert any(m.startswith("web02: ") and f"on {node}" in m
               for m in findings("was not Pacemaker's doing"))


def test_a_vm_the_file_does_not_list_is_watched_too(cluster: Lab) -> None:
    # An operator lists only some VMs: a VirtualDomain resource outside the file still gets the
    # paused finding and the out-of-band record (controller/model/vms.py), never an action.
    wait_for("converged", converged, 120)
    listed = cluster.desired.read_text()
    assert "  - name: db01\n" in listed
    generation = metric("kvm_warden_desired_state_generation") or 0
    cluster.desired.write_text(listed.replace("  - name: db01\n", ""))
    node = node_of("db01")
    try:
        wait_for("the file without db01 in force", lambda: (metric(
            "kvm_warden_desired_state_generation") or 0) > generation, 20)
        before, acted = len(out_of_band("db01")), len(audits())
        virsh(node, "suspend", "db01")
        (msg,) = wait_for("the paused finding for db01",
                          lambda: findings("domain db01 is paused"), 10, 0.1)
        assert f"paused on {node} (user)" in msg
        virsh(node, "resume", "db01")
        wait_for("an out-of-band record for db01",
                 lambda: len(out_of_band("db01")) > before, 15, 0.1)
        assert out_of_band("db01")[before]["action"] == f"suspended/paused of db01 on {node}"
        wait_for("the finding cleared", lambda: not findings("domain db01 is paused"), 10, 0.1)
        assert not [a["action"] for a in audits()[acted:]
                    if a["action"].startswith(("fail vm-db01", "cleanup vm-db01"))]
    finally:
        for n, _ in lab.guest_processes().get("db01", []):
            lab.on(n, "virsh", "-c", "qemu:///system", "resume", "db01", check=False)
        cluster.write_desired()
    wait_for("converged", converged, 120)


def test_a_live_migration_by_pacemaker_is_not_out_of_band(cluster: Lab) -> None:
    wait_for("converged", converged, 120)
    before = len(out_of_band())
    cluster.write_desired(web01="kvm3")
    try:
        wait_for("web01 live-migrated to kvm3",
                 lambda: lab.vms_running().get("vm-web01") == ["kvm3"], 120)
    finally:
        cluster.write_desired()
    wait_for("converged", converged, 120)
    time.sleep(6)
    assert out_of_band()[before:] == []


def _kvm3_guests() -> list[str]:
    return sorted(g for g, nodes in lab.guests_by_node().items() if "kvm3" in nodes)


def _put_a_guest_on_kvm3(cluster: Lab) -> None:
    """db01 is free to run anywhere: put it on kvm3 for the partition scenarios."""
    wait_for("converged", converged, 120)
    if lab.vms_running()["vm-db01"] != ["kvm3"]:
        cluster.write_desired(db01="    placement: {prefer: kvm3}\n")
        wait_for("db01 on kvm3", lambda: lab.vms_running()["vm-db01"] == ["kvm3"], 120)
    wait_for("db01's qemu on kvm3", lambda: _kvm3_guests() == ["db01"], 30)


def _heal(cluster: Lab) -> None:
    (lab.BASE / "bmc-fail").unlink(missing_ok=True)
    lab.set_link("kvm3", True)
    cluster.write_desired()
    wait_for("kvm3 online again", lambda: "Online: [ kvm1 kvm2 kvm3 ]" in lab.on(
        "kvm1", "crm_mon", "-1", check=False).stdout, 240)
    wait_for("converged", converged, 180)


def test_a_partitioned_node_is_fenced_and_its_vms_restart_once_on_the_survivors(
        cluster: Lab) -> None:
    _put_a_guest_on_kvm3(cluster)
    acted = len(audits())
    bmc_log = (lab.BASE / "bmc.log").read_text()
    sampler = Sampler()
    with sampler.running():
        t0 = time.monotonic()
        lab.set_link("kvm3", False)
        try:
            wait_for("kvm3 fenced by the majority", lambda: "off kvm3 -> ok" in
                     (lab.BASE / "bmc.log").read_text()[len(bmc_log):], 60, 0.1)
            fenced = time.monotonic() - t0
            wait_for("db01 running on a survivor", lambda: any(
                n in ("kvm1", "kvm2") for n in lab.guests_by_node().get("db01", [])), 120, 0.1)
            restarted = time.monotonic() - t0
            time.sleep(5)
        finally:
            lab.set_link("kvm3", True)
        changes_while_partitioned = audits()[acted:]
    print(f"partition -> fenced: {fenced:.1f} s; -> db01 running on a survivor: {restarted:.1f} s")
    assert sampler.twice() == [], sampler.twice()[:5]
    path = sampler.placements("db01")
    assert path[0] == "kvm3" and len(path) == 2 and path[1] in ("kvm1", "kvm2"), path
    # While kvm3 was unclean and fencing pending, kvm-warden changed nothing: Pacemaker's
    # recovery is not kvm-warden's to fight.
    assert changes_while_partitioned == [], [a["action"] for a in changes_while_partitioned]
    # The web view says who was fenced, from crm_mon's own fencing history.
    fenced_by_web = wait_for("kvm3's fencing in the web view", lambda: [
        e for e in json.loads(lab.warden_get("/api/vms"))["stack"]["last_fencing"]
        if e["target"] == "kvm3" and e["status"] == "success"], 60)
    assert fenced_by_web[0]["action"] in ("reboot", "off"), fenced_by_web
    _heal(cluster)


def test_when_fencing_fails_the_guests_on_the_unclean_node_are_a_split_brain_finding(
        cluster: Lab) -> None:
    _put_a_guest_on_kvm3(cluster)
    on_kvm3 = _kvm3_guests()
    acted = len(audits())
    (lab.BASE / "bmc-fail").touch()  # the power controller is unreachable: fencing fails
    t0 = time.monotonic()
    lab.set_link("kvm3", False)
    try:
        wait_for("kvm3 UNCLEAN", lambda: "UNCLEAN" in lab.on(
            "kvm1", "crm_mon", "-1", check=False).stdout, 60, 0.2)
        wait_for("a split-brain finding for every guest on kvm3", lambda: all(
            findings(f"domain {g} was last seen running on kvm3") for g in on_kvm3), 30, 0.1)
        print(f"partition, fencing failing -> split-brain finding: {time.monotonic() - t0:.1f} s")
        assert metric("kvm_warden_node_unclean", node="kvm3") == 1
        assert (metric("kvm_warden_split_brain_findings") or 0) >= len(on_kvm3)
        # It stays: the guests still run on kvm3, Pacemaker does not start them elsewhere,
        # and kvm-warden changes nothing.
        time.sleep(15)
        assert _kvm3_guests() == on_kvm3
        assert all(findings(f"domain {g} was last seen running on kvm3") for g in on_kvm3)
        placed = lab.vms_running()
        assert all(placed.get(f"vm-{g}") == ["kvm3"] for g in on_kvm3), placed
        assert audits()[acted:] == []
        assert "error: power controller unreachable" in (lab.BASE / "bmc.log").read_text()
    finally:
        _heal(cluster)


def _applied(path: Path) -> list[dict[str, Any]]:
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in recs if r.get("outcome") == "applied"]


def test_the_controller_fails_over_with_its_address_desired_file_and_ledger(
        cluster: Lab) -> None:
    """config/pacemaker/controller-ha.pcs, exactly: kill the controller's node, Pacemaker (after
    fencing it) starts the controller elsewhere; it reads the same desired file and ledger from
    the shared storage and answers /metrics on the same address."""
    wait_for("converged", converged, 120)
    mine = lab.node_pids("kvm1", lab.CONTROLLER)
    lab.on("kvm1", "kill", *mine)  # the lab's own controller: exactly one may run
    audit = lab.HA_SHARED / "audit.jsonl"
    try:
        lab.start_ha_controller(cluster.desired.read_text())
        wait_for("the controller started by Pacemaker", lambda: lab.ha_node() is not None, 120)
        first = lab.ha_node()
        assert first is not None
        via = next(n for n in lab.NODES if n != first)
        wait_for("/metrics on the controller's address",
                 lambda: lab.ha_get("/metrics", via)[0] == 200, 60)
        assert lab.ha_get("/metrics", via, auth=False)[0] == 401
        assert lab.ha_get("/healthz", via, auth=False)[0] == 200
        # Give it something to do, so that its ledger remembers applied work.
        (lab.HA_SHARED / "desired.yaml").write_text(
            cluster.desired.read_text().replace("prefer: kvm1", "prefer: kvm3"))
        wait_for("web01 moved by the HA controller",
                 lambda: lab.vms_running().get("vm-web01") == ["kvm3"], 120)
        wait_for("the ledger on the shared storage",
                 lambda: (lab.HA_SHARED / "ledger.json").exists(), 30)
        time.sleep(6)  # converged and idle
        done = {r["action"] for r in _applied(audit)}
        assert any("warden-prefer-vm-web01" in a for a in done), done
        before = len(_applied(audit))
        t0 = time.monotonic()
        lab.kill_node(first)
        wait_for("the controller on another node", lambda: lab.ha_node(via) not in (None, first),
                 120, 0.2)
        wait_for("/metrics on the same address again",
                 lambda: lab.ha_get("/metrics", via)[0] == 200, 120, 0.2)
        takeover = time.monotonic() - t0
        print(f"controller node killed -> /metrics answers on {lab.HA_VIP} from "
              f"{lab.ha_node(via)}: {takeover:.1f} s")
        code, body = lab.ha_get("/status", via)
        doc = json.loads(body)
        assert doc["desired"]["path"] == "/kvm/storage/kvm-warden/desired.yaml"
        wait_for("the surviving cluster settles", lambda: lab.vms_running(via).get(
            "vm-web01") == ["kvm3"] and len(lab.vms_running(via)) == 3, 180)
        time.sleep(10)
        again = [r["action"] for r in _applied(audit)[before:] if r["action"] in done]
        assert again == [], f"the new controller redid what the ledger says was done: {again}"
    finally:
        lab.stop_ha_controller(next(n for n in lab.NODES if lab.netns_pids(n)))
        cluster.write_desired()
        lab.start_controller(cluster.desired)
    wait_for("converged", converged, 240)
