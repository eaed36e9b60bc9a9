"""The web view's actions as reviewed changes of the desired file, on the real HTTP server
over TLS with roles and CSRF, against the simulated cluster (Pacemaker's own tools, crm_simulate
as its scheduler): the review shows the diff and Pacemaker's transition, confirm writes the file
(every other byte kept) and the loop converges on it; a stale review and a viewer are refused."""

from __future__ import annotations

import base64
import difflib
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.http import StatusServer
from controller.app.web import WebView
from controller.app.webconfig import load_web_config
from controller.engine.loop import Controller
from controller.model.overview import StatusDoc
from tests import cibs
from tests.integration.test_http_hardening import PASSWORD, certificate, web_yml
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


class Client:
    def __init__(self, port: int, ca: Path):
        self.port, self.ca = port, ca

    def call(self, method: str, path: str, user: str, body: object | None = None,
             csrf: str | None = None) -> tuple[int, dict[str, object]]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=60)
        h = {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode(),
             "Origin": f"https://127.0.0.1:{self.port}", "Content-Type": "application/json"}
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None
                         else None, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data.startswith(b"{") else {"text": data}
        finally:
            conn.close()

    def token(self, user: str) -> str:
        return str(self.call("GET", "/api/session", user)[1]["csrf"])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Controller, Client, Path, Path]]:
    sim, store, desired = simulated(tmp_path)
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    t = time.time()
    for i in range(5):
        if not ctl.run_pass(now=t + 11 * i).decisions:
            break
    certificate(tmp_path)
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"),
                          load_web_config(web_yml(tmp_path, 4)), WebView(ctl))
    server.start()
    try:
        yield ctl, Client(server.port, tmp_path / "cert.pem"), desired, sim.cib_file
    finally:
        server.stop()


def test_a_move_is_reviewed_confirmed_written_and_converged(
        served: tuple[Controller, Client, Path, Path]) -> None:
    ctl, client, desired, cib_file = served
    where = cibs.locate(cib_file, "vm-db01")  # db01: no placement in the file yet
    target = next(n for n in cibs.NODES if n not in where)
    edit = {"edit": {"type": "place", "vm": "db01", "node": target}}
    before = desired.read_text()
    token = client.token("ops")
    code, review = client.call("POST", "/api/edits/review", "ops", edit, token)
    assert code == 200, review
    assert review["valid"] is True and desired.read_text() == before  # nothing written
    assert f"+    placement: {{prefer: {target}}}" in str(review["diff"])
    steps = review["transition"]
    assert steps == [{"resource": "vm-db01", "action": "migrate", "from": where[0],
                      "to": target}]
    assert [a["verdict"] for a in review["actions"]] == ["admitted"]
    # confirmed with the review's hashes: written, and nothing else of the file changed
    code, done = client.call("POST", "/api/edits/confirm", "ops", {
        **edit, "file_sha256": review["file_sha256"], "cib_version": review["cib_version"]},
        token)
    assert code == 200 and done["written"] is True, done
    after = desired.read_text()
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == [f"+    placement: {{prefer: {target}}}"], changed
    # the loop applies it as any file edit
    assert ctl.desired.poll()
    t = time.time() + 100
    for i in range(5):
        ctl.run_pass(now=t + 11 * i)
    assert cibs.locate(cib_file, "vm-db01") == [target]


def test_the_review_says_when_pacemaker_would_move_another_vm(
        served: tuple[Controller, Client, Path, Path]) -> None:
    # web02 to the third node: with anti-affinity and no stickiness Pacemaker's scheduler
    # would swap web01 and web02 instead -- the review shows it, and that it would be held.
    _, client, _, cib_file = served
    taken = cibs.locate(cib_file, "vm-web01") + cibs.locate(cib_file, "vm-web02")
    target = next(n for n in cibs.NODES if n not in taken)
    code, review = client.call("POST", "/api/edits/review", "ops",
                               {"edit": {"type": "place", "vm": "web02", "node": target}},
                               client.token("ops"))
    assert code == 200
    (held,) = review["actions"]
    assert held["verdict"] == "would-move-unasked" and "vm-web01" in held["detail"]
    assert any(s["resource"] == "vm-web01" for s in review["transition"])


def test_a_stale_review_is_refused_and_a_viewer_cannot_act(
        served: tuple[Controller, Client, Path, Path]) -> None:
    _, client, desired, _ = served
    edit = {"edit": {"type": "run-state", "vm": "db01", "state": "stopped"}}
    token = client.token("ops")
    code, review = client.call("POST", "/api/edits/review", "ops", edit, token)
    assert code == 200 and "+    state: stopped" in str(review["diff"]), review
    desired.write_text(desired.read_text() + "# edited by hand meanwhile\n")
    code, doc = client.call("POST", "/api/edits/confirm", "ops", {
        **edit, "file_sha256": review["file_sha256"], "cib_version": review["cib_version"]},
        token)
    assert code == 409 and doc["stale"] is True and "review the action again" in str(doc["error"])
    assert "state: stopped" not in desired.read_text()
    # a viewer, with its own valid CSRF token: forbidden, nothing written
    viewer = client.token("grafana")
    for path in ("/api/edits/review", "/api/edits/confirm"):
        code, doc = client.call("POST", path, "grafana", edit, viewer)
        assert code == 403, (path, doc)
    # without the CSRF token, even the operator is refused
    assert client.call("POST", "/api/edits/review", "ops", edit)[0] == 403
    # nonsense is a clear 400, an unknown VM a 409 that says so
    assert client.call("POST", "/api/edits/review", "ops", {"edit": {"type": "x"}}, token)[0] \
        == 400
    code, doc = client.call("POST", "/api/edits/review", "ops",
                            {"edit": {"type": "place", "vm": "nosuch", "node": "kvm1"}}, token)
    assert code == 409 and "no VM 'nosuch'" in str(doc["error"])
