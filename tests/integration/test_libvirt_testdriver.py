"""The libvirt probe on libvirt's real test:/// driver (fast: no daemon, no KVM)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import libvirt

from controller.engine.store import Store
from controller.metrics import REGISTRY, dead_threads
from probes.libvirt.events import LibvirtWatcher
from probes.pacemaker.alerts import AlertReceiver
from tests.waiting import wait_for


def test_destroy_and_create_arrive_as_lifecycle_events_with_listings() -> None:
    got: list[Any] = []
    w = LibvirtWatcher("n1", "test:///default", got.append, listing_seconds=60)
    w.start()
    try:
        wait_for("any(type(g).__name__ == 'DomainSeen' for g in got)",
                 lambda: any(type(g).__name__ == "DomainSeen" for g in got), 5.0, 0.02)
        first = next(g for g in got if type(g).__name__ == "DomainSeen")
        assert [(d.name, d.state) for d in first.domains] == [("test", "running")]
        assert first.domains[0].disks == ("/guest/diskimage1",)
        # test:///default is one shared in-memory host per process.
        conn = libvirt.open("test:///default")
        dom = conn.lookupByName("test")
        dom.suspend()
        dom.resume()
        dom.destroy()
        wait_for("[(g.event, g.detail) for g in got if type(g).__name__ == ...",
                 lambda: [(g.event, g.detail) for g in got
                                 if type(g).__name__ == "DomainLifecycle"] == [
            ("suspended", "paused"), ("resumed", "unpaused"), ("stopped", "destroyed")], 5.0, 0.02)
        wait_for("any(type(g).__name__ == 'DomainSeen' and g.domains and g....",
                 lambda: any(type(g).__name__ == "DomainSeen" and g.domains
                                    and g.domains[0].state == "shutoff" for g in got), 5.0, 0.02)
        dom.create()
        conn.close()
    finally:
        w.stop()


def test_a_bad_uri_never_kills_the_probe() -> None:
    got: list[Any] = []
    w = LibvirtWatcher("n1", "test:///nonexistent/file.xml", got.append, max_backoff=0.2)
    before = REGISTRY.get_sample_value("kvm_warden_probe_errors_total", {"probe": "libvirt"}) or 0
    w.start()
    try:
        # It keeps trying (each failure counted) and stays alive, unconnected.
        wait_for("two failed connects", lambda: (REGISTRY.get_sample_value(
            "kvm_warden_probe_errors_total", {"probe": "libvirt"}) or 0) >= before + 2, 10)
        assert "libvirt-probe" not in dead_threads() and not w.connected
    finally:
        w.stop()


def test_alert_receiver_counts_lost_alerts_and_rejects_garbage(tmp_path: Path) -> None:
    store = Store()
    rx = AlertReceiver(str(tmp_path / "alerts.sock"), store.fold)
    changed: list[frozenset[str]] = []
    store.listeners.append(changed.append)
    lost = REGISTRY.get_sample_value("kvm_warden_alerts_dropped_total") or 0.0
    bad = REGISTRY.get_sample_value("kvm_warden_bus_rejected_total",
                                    {"reason": "alert-undecodable"}) or 0.0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for seq in (1, 2, 5):  # 3 and 4 never arrived
                s.sendto(f'{{"kind":"resource","node":"kvm1","rsc":"r{seq}",'
                         f'"node_sequence":"{seq}"}}'.encode(), rx.endpoint)
            s.sendto(b"\xff not json", rx.endpoint)
        wait_for("len(changed) == 3", lambda: len(changed) == 3, 5.0, 0.02)
        assert REGISTRY.get_sample_value("kvm_warden_alerts_dropped_total") == lost + 2
        wait_for("REGISTRY.get_sample_value( 'kvm_warden_bus_rejected_total...",
                 lambda: REGISTRY.get_sample_value(
            "kvm_warden_bus_rejected_total", {"reason": "alert-undecodable"}) == bad + 1, 5.0, 0.02)
    finally:
        rx.close()


def test_a_paused_domain_carries_libvirts_reason_in_events_listings_and_the_store() -> None:
    got: list[Any] = []
    store = Store()
    w = LibvirtWatcher("n1", "test:///default", got.append, listing_seconds=60)
    w.start()
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    try:
        wait_for("a first listing", lambda: any(type(g).__name__ == "DomainSeen" for g in got),
                 5.0, 0.02)
        dom.suspend()  # what `virsh suspend` does: libvirt's reason is "user"
        assert dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER]
        wait_for("the suspended event", lambda: any(
            type(g).__name__ == "DomainLifecycle" and g.event == "suspended" for g in got),
            5.0, 0.02)
        ev = next(g for g in got if type(g).__name__ == "DomainLifecycle")
        assert (ev.state, ev.reason) == ("paused", "user")
        wait_for("a listing with the pause", lambda: any(
            type(g).__name__ == "DomainSeen" and g.domains and g.domains[0].state == "paused"
            for g in got), 5.0, 0.02)
        listing = [g for g in got if type(g).__name__ == "DomainSeen"][-1]
        assert (listing.domains[0].state, listing.domains[0].reason) == ("paused", "user")
        # The store keeps when the pause began across later listings of the same state.
        store.observe([ev], "n1", 100.0)
        store.observe([listing], "n1", 130.0)
        assert store.state.domains["n1"]["test"].since == 100.0
        dom.resume()
        wait_for("resumed", lambda: any(
            type(g).__name__ == "DomainLifecycle" and g.event == "resumed" for g in got),
            5.0, 0.02)
        resumed = [g for g in got if type(g).__name__ == "DomainLifecycle"][-1]
        store.observe([resumed], "n1", 140.0)
        d = store.state.domains["n1"]["test"]
        assert (d.state, d.reason, d.since) == ("running", "", 140.0)
    finally:
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        conn.close()
        w.stop()
