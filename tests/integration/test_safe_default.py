"""Issue "Safe by default", 3: without a web configuration every local user reaches the port
(it is on loopback), so it serves them read-only. Tried as the unprivileged user `nobody` with
curl, as the issue's reproduction did: it may look, it may not change the cluster."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.http import StatusServer
from controller.app.web import WebView
from controller.engine.loop import Controller
from controller.model.overview import StatusDoc
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


def curl_as_nobody(*argv: str) -> tuple[int, dict[str, object]]:
    out = subprocess.run(["runuser", "-u", "nobody", "--", "curl", "-s",
                          "-w", "\n%{http_code}", *argv], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body) if body.startswith("{") else {"text": body}


@pytest.fixture
def unconfigured(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    sim, store, desired = simulated(tmp_path)
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    ctl.run_pass(now=time.time())
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"), None,
                          WebView(ctl))
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", desired
    finally:
        server.stop()


def test_without_a_web_configuration_a_local_user_may_look_but_not_change(
        unconfigured: tuple[str, Path]) -> None:
    url, desired = unconfigured
    code, session = curl_as_nobody(url + "/api/session")
    assert code == 200 and session["user"] == "anonymous" and session["role"] == "viewer"
    assert curl_as_nobody(url + "/api/vms")[0] == 200
    before = desired.read_text()
    for path in ("/api/edits/review", "/api/edits/confirm"):
        code, doc = curl_as_nobody(
            "-X", "POST", "-H", "Content-Type: application/json",
            "-H", f"X-CSRF-Token: {session['csrf']}", "-H", f"Origin: {url}",
            "--data", json.dumps({"edit": {"type": "node-state", "node": "kvm1",
                                           "state": "standby"}}), url + path)
        assert code == 403 and "viewer" in str(doc.get("error", doc)), (path, doc)
    assert desired.read_text() == before


def test_the_packaged_default_says_writes_need_a_named_operator() -> None:
    text = (Path(__file__).parent.parent.parent / "config" / "systemd" / "kvm-warden.default"
            ).read_text()
    assert "read-only" in text and "operator" in text
