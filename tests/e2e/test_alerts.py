"""Alerts delivered end to end: Debian's Prometheus scrapes the lab's controller (https, basic
auth, as off loopback) with kvm-warden's rules, Debian's Alertmanager routes what fires to a
webhook receiver. The out-of-band alert for a `virsh destroy` behind the cluster's back, and
the split-brain alert when fencing fails: each scenario stands alone.

All three run inside kvm1's network namespace, where the controller listens on 127.0.0.1
(processes started with `nsenter --net`, so they read the host's files)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from lab import lab
from tests.e2e.conftest import Lab, converged
from tests.e2e.test_faults import _heal, _kvm3_guests, _put_a_guest_on_kvm3
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """Alertmanager's webhook receiver, listening inside kvm1's network namespace."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        sock = lab.in_netns("kvm1", lambda: socket.create_server(("127.0.0.1", 0)))
        self.port = sock.getsockname()[1]
        payloads = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for p in list(self.payloads) for a in p.get("alerts", [])
                if a["labels"].get("alertname") == name and a.get("status") == "firing"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.socket.close()


def free_port_in_kvm1() -> int:
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    return lab.in_netns("kvm1", pick)


def in_kvm1(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(["nsenter", f"--net=/proc/{lab.node_pid('kvm1')}/ns/net", *argv],
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def alerting(cluster: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    for tool in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make test installs Debian's package)")
    tmp = tmp_path_factory.mktemp("alerting")
    hook = Receiver()
    am_port, prom_port = free_port_in_kvm1(), free_port_in_kvm1()
    (tmp / "alertmanager.yml").write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 1s, group_interval: 1s, "
        "repeat_interval: 1h}\n"
        f"receivers: [{{name: hook, webhook_configs: [{{url: 'http://127.0.0.1:{hook.port}/', "
        "send_resolved: false}]}]\n")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{ROOT / 'config' / 'prometheus' / 'kvm-warden-rules.yml'}]\n"
        f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
        "scrape_configs:\n  - job_name: kvm-warden\n    scheme: https\n"
        f"    tls_config: {{ca_file: {lab.BASE / 'ha' / 'cert.pem'}}}\n"
        f"    basic_auth: {{username: {lab.HA_USER}, password: {lab.HA_PASSWORD}}}\n"
        "    static_configs: [{targets: ['127.0.0.1:9810']}]\n")
    procs = [
        in_kvm1(["prometheus-alertmanager", f"--config.file={tmp / 'alertmanager.yml'}",
                 f"--storage.path={tmp / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address="], tmp / "alertmanager.log"),
        in_kvm1(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"], tmp / "prometheus.log"),
    ]

    def scraped() -> bool:
        out = lab.on("kvm1", "curl", "-s", f"http://127.0.0.1:{prom_port}/api/v1/query?query="
                     "up%7Bjob%3D%22kvm-warden%22%7D", check=False).stdout
        return '"value":[' in out and '"1"]' in out
    try:
        wait_for("Prometheus scraping the controller over https (up == 1)", scraped, 90, 0.5)
        yield hook
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        hook.close()


def test_an_out_of_band_destroy_reaches_the_webhook(cluster: Lab, alerting: Receiver) -> None:
    wait_for("converged", converged, 180)
    (node,) = lab.vms_running()["vm-web02"]
    before = len(alerting.alerts("KvmWardenOutOfBandChange"))
    t0 = time.monotonic()
    lab.on(node, "virsh", "-c", "qemu:///system", "destroy", "web02")
    wait_for("KvmWardenOutOfBandChange delivered for web02", lambda: any(
        a["labels"].get("vm") == "web02"
        for a in alerting.alerts("KvmWardenOutOfBandChange")[before:]), 120, 0.5)
    (alert,) = [a for a in alerting.alerts("KvmWardenOutOfBandChange")[before:]
                if a["labels"]["vm"] == "web02"][:1]
    print(f"virsh destroy -> out-of-band alert at the webhook: {time.monotonic() - t0:.1f} s")
    assert alert["labels"]["node"] == node and alert["labels"]["severity"] == "warning"
    assert "web02 on " + node in alert["annotations"]["summary"]
    wait_for("converged", converged, 180)


def test_a_split_brain_when_fencing_fails_reaches_the_webhook(cluster: Lab,
                                                               alerting: Receiver) -> None:
    _put_a_guest_on_kvm3(cluster)
    assert _kvm3_guests()
    before = len(alerting.alerts("KvmWardenSplitBrain"))
    (lab.BASE / "bmc-fail").touch()  # the power controller is unreachable: fencing fails
    t0 = time.monotonic()
    lab.set_link("kvm3", False)
    try:
        wait_for("KvmWardenSplitBrain delivered", lambda: len(
            alerting.alerts("KvmWardenSplitBrain")) > before, 120, 0.5)
        print(f"partition, fencing failing -> split-brain alert at the webhook: "
              f"{time.monotonic() - t0:.1f} s")
        alert = alerting.alerts("KvmWardenSplitBrain")[before]
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == "127.0.0.1:9810"
    finally:
        _heal(cluster)
