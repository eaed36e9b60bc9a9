"""Hostile and clumsy input: no crash, no deaf thread; /healthz tells when a thread died."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

from controller.app.http import StatusServer
from controller.metrics import dead_threads, watch_thread
from controller.model.events import AlertReceived, Envelope
from controller.model.overview import StatusDoc
from probes.pacemaker.alerts import AlertReceiver, parse_alert
from tests.waiting import wait_for


def test_no_datagram_ends_the_alert_receiver(tmp_path: Path) -> None:
    got: list[Envelope] = []
    failed_once = threading.Event()

    def deliver(env: Envelope) -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("a bug in a handler")
        got.append(env)

    rx = AlertReceiver(str(tmp_path / "alerts.sock"), deliver)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for data in (b'{"kind":"resource","node":"kvm1","node_sequence":"\xc2\xb2"}',  # "²"
                     b"\xff\xfe\x00", b"[]", b'{"kind":"resource","node_sequence":"1e400"}',
                     json.dumps({"kind": "node", "node": "kvm1", "node_sequence": "3"}).encode()):
            tx.sendto(data, str(tmp_path / "alerts.sock"))
        wait_for("the valid alert after the garbage", lambda: any(
            isinstance(e.payload, AlertReceived) and e.payload.kind == "node" for e in got), 5)
        assert "alerts" not in dead_threads()
    finally:
        tx.close()
        rx.close()


def test_a_superscript_sequence_is_no_sequence() -> None:
    assert parse_alert('{"kind":"resource","node_sequence":"²"}'.encode()).sequence is None
    assert parse_alert(b'{"kind":"resource","node_sequence":"99999999999999999999"}').sequence is None


def test_healthz_fails_and_names_a_dead_thread() -> None:
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"))
    server.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:

        if not dead_threads():  # (threads other tests left behind would already count)
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
        dying = threading.Thread(target=lambda: None, name="test-deaf-thread")
        dying.start()
        dying.join()
        watch_thread(dying)
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("a dead thread must fail /healthz")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and b"test-deaf-thread" in exc.read()
    finally:
        from controller.metrics import forget_thread

        forget_thread(dying)
        server.stop()


def test_stalled_clients_do_not_starve_the_others() -> None:
    import time

    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"))
    server.start()
    stalled = []
    try:
        for _ in range(300):  # connect and never send a request
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            stalled.append(s)
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - started < 2.0
        for s in stalled[:50]:
            s.close()  # clients that vanish are not errors of ours (no traceback, still serving)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        for s in stalled:
            s.close()
        server.stop()


def test_healthz_fails_and_names_a_stalled_thread() -> None:
    import time

    from controller.metrics import beat, dead_threads, forget_thread

    release = threading.Event()
    stuck = threading.Thread(target=release.wait, name="test-stuck-thread", daemon=True)
    stuck.start()
    watch_thread(stuck, stall_after=0.5)
    try:
        beat("test-stuck-thread")
        assert not any(d.startswith("test-stuck-thread") for d in dead_threads())
        time.sleep(0.8)  # it never comes round again
        assert any(d.startswith("test-stuck-thread (stalled") for d in dead_threads())
    finally:
        forget_thread(stuck)
        release.set()


def test_an_empty_key_in_the_allow_list_refuses_instead_of_killing_zap(tmp_path: Path) -> None:
    from controller.bus.keys import _AllowList

    (tmp_path / "broken.key").write_text("")
    assert _AllowList(tmp_path).callback("*", b"x" * 40) is False
    assert _AllowList(tmp_path / "missing").callback("*", b"x" * 40) is False
