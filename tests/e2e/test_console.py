"""The console in a real browser on the real lab: headless Chromium (Selenium, Debian's
chromedriver) opens the noVNC console of a real KVM guest on kvm2 through the controller on
kvm1 (its WebSocket -> CURVE -> kvm2's agent -> the guest's VNC on kvm2's loopback); Pacemaker
live-migrates the guest and the open console follows it; without credentials there is no
console."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import lab
from tests.browser import chromium, waiter
from tests.e2e.conftest import Lab, converged
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NONBLACK = """
const c = document.querySelector('#screen canvas');
if (!c || !c.width) return 0;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) n++;
return n;
"""


@pytest.fixture
def web() -> Iterator[str]:
    fwd = lab.Forwarder("kvm1", 9810)  # the controller listens inside kvm1's namespace
    try:
        yield f"https://127.0.0.1:{fwd.host_port}"
    finally:
        fwd.close()


def request(url: str, method: str = "GET", auth: bool = True) -> int:
    req = urllib.request.Request(url, method=method)
    if auth:
        token = base64.b64encode(f"{lab.HA_USER}:{lab.HA_PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=str(lab.BASE / "ha" / "cert.pem"))
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def console_records() -> list[dict[str, object]]:
    path = lab.BASE / "state" / "audit.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [r for r in recs if r.get("kind") == "console"]


def test_the_console_of_a_real_guest_follows_it_through_a_live_migration(
        cluster: Lab, web: str, tmp_path: Path) -> None:
    wait_for("converged", converged, 120)
    assert lab.vms_running()["vm-web02"] == ["kvm2"]  # the controller is on kvm1
    # No credentials, no console: neither a ticket nor a WebSocket without one.
    assert request(f"{web}/api/vms/web02/console", "POST", auth=False) == 401
    assert request(f"{web}/console/web02/ws?ticket=forged") == 403
    before = len(console_records())
    drv = chromium(tmp_path / "profile", (lab.HA_USER, lab.HA_PASSWORD))
    try:
        t0 = time.monotonic()
        drv.get(f"{web}/vm/web02#console")
        wait = waiter(drv, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.console") == "connected")
        wait.until(lambda d: d.execute_script(NONBLACK) > 100)
        first = time.monotonic() - t0
        print(f"console first frame (page load -> guest's screen in the canvas): {first:.1f} s")
        assert drv.execute_script("return document.body.dataset.consoleNode") == "kvm2"
        # Pacemaker live-migrates the guest (kvm-warden asks for it through the desired file);
        # the open console reconnects to the new node by itself.
        drv.execute_script("window.__samePage = true")
        cluster.write_desired(web02="kvm3")
        try:
            wait_for("web02 on kvm3", lambda: lab.vms_running().get("vm-web02") == ["kvm3"], 120)
            t1 = time.monotonic()
            waiter(drv, 60).until(
                lambda d: d.execute_script("return document.body.dataset.consoleNode") == "kvm3"
                and d.execute_script("return document.body.dataset.console") == "connected"
                and d.execute_script(NONBLACK) > 100)
            print(f"migration done -> console shows the guest from kvm3: "
                  f"{time.monotonic() - t1:.1f} s")
            assert drv.execute_script("return window.__samePage") is True
        finally:
            cluster.write_desired()
    finally:
        drv.quit()
    wait_for("both sessions audited", lambda: len(console_records()) >= before + 2, 30)
    sessions = console_records()[before:]
    assert {str(r["action"]) for r in sessions} >= {"console of web02 on kvm2",
                                                    "console of web02 on kvm3"}
    assert all(r["who"] == f"user:{lab.HA_USER}" for r in sessions)
    # The history database has the live migration with its nodes, and the sessions.
    out = subprocess.run([sys.executable, "-m", "controller.app.cli", "history", "web02",
                          "--state-dir", str(lab.BASE / "state"), "--json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    events = [json.loads(x) for x in out.splitlines()]
    assert any(e["kind"] == "migration" and (e["from_node"], e["to_node"]) == ("kvm2", "kvm3")
               for e in events), events
    assert {e["node"] for e in events if e["kind"] == "console"} >= {"kvm2", "kvm3"}
    wait_for("converged", converged, 180)
