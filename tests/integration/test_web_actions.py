"""The web view's actions as reviewed changes of the desired file, on the real HTTP server
over TLS with roles and CSRF, against the simulated cluster (Pacemaker's own tools, crm_simulate
as its scheduler): the review shows the diff and Pacemaker's transition, confirm writes the file
(every other byte kept) and the loop converges on it; a stale review and a viewer are refused."""

from __future__ import annotations

import base64
import difflib
import http.client
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.http import StatusServer
from controller.app.web import WebView
from controller.app.webconfig import load_web_config
from controller.engine.ledger import LedgerFile
from controller.engine.loop import Controller
from controller.model.overview import DomainOn, StatusDoc
from tests import cibs
from tests.integration.test_http_hardening import PASSWORD, certificate, web_yml
from tests.simulated import add_outside_domain, simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


class Client:
    def __init__(self, port: int, ca: Path, view: WebView | None = None):
        self.port, self.ca, self.view = port, ca, view

    def call(self, method: str, path: str, user: str, body: object | None = None,
             csrf: str | None = None, raw: bytes | None = None) -> tuple[int, dict[str, object]]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=60)
        h = {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode(),
             "Origin": f"https://127.0.0.1:{self.port}", "Content-Type": "application/json"}
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        try:
            conn.request(method, path, body=raw if raw is not None else json.dumps(
                body).encode() if body is not None else None, headers=h)
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
    view = WebView(ctl)
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"),
                          load_web_config(web_yml(tmp_path, 4)), view)
    server.start()
    try:
        yield ctl, Client(server.port, tmp_path / "cert.pem", view), desired, sim.cib_file
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
        "review_id": review["review_id"]},
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
        "review_id": review["review_id"]},
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


def test_a_cleanup_is_a_reviewed_edit_the_loop_carries_out_through_pacemaker(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """db01's monitor failed and Pacemaker recovered it: its fail-count and failed action stay
    until somebody cleans them. The button writes `clean_failures_before` (the review's
    instant); health then has Pacemaker clean them (crm_resource --cleanup), through the guard."""
    ctl, client, desired, cib_file = served
    (node,) = cibs.locate(cib_file, "vm-db01")
    failed = cib_file.with_name("failed.xml")
    subprocess.run(["crm_simulate", "-x", str(cib_file), "-O", str(failed), "-i",
                    f"vm-db01_monitor_10000@{node}=7"], check=True, capture_output=True,
                   timeout=60)
    failed.replace(cib_file)
    ctl.run_pass(now=time.time())  # the loop sees it (a review reads what the loop observed)
    assert "vm-db01" in cibs.tool(["crm_mon", "-1", "--output-as=xml"], cib_file).split(
        "<failures>", 1)[-1]
    edit = {"edit": {"type": "clean-failures", "vm": "db01"}}
    token = client.token("ops")
    code, review = client.call("POST", "/api/edits/review", "ops", edit, token)
    assert code == 200 and review["valid"] is True, review
    when = str(review["edit"]["before"])  # type: ignore[index]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when)
    assert f"+    clean_failures_before: '{when}'" in str(review["diff"]), review["diff"]
    (cleanup,) = [a for a in review["actions"] if "cleanup" in a["action"]]
    assert cleanup["verdict"] == "admitted" and f"vm-db01 on {node}" in cleanup["action"]
    code, done = client.call("POST", "/api/edits/confirm", "ops", {
        "review_id": review["review_id"]}, token)
    assert code == 200 and done["written"] is True, done
    assert f"    clean_failures_before: '{when}'\n" in desired.read_text()
    assert ctl.desired.poll()
    result = ctl.run_pass(now=time.time() + 11)
    assert [(type(o.action).__name__, o.action.reconciler, o.applied) for o in result.outcomes
            ] == [("Cleanup", "health", True)]
    assert "the file asks db01's failures" in result.outcomes[0].action.why
    mon = cibs.tool(["crm_mon", "-1", "--output-as=xml"], cib_file)
    assert "vm-db01" not in mon.split("<failures>", 1)[-1] if "<failures>" in mon else True
    assert cibs.locate(cib_file, "vm-db01") == [node]  # cleaned, not moved
    # the file keeps the instant: later passes clean nothing more
    assert not [o for o in ctl.run_pass(now=time.time() + 30).outcomes]


def test_a_domain_outside_the_cluster_is_enrolled_by_a_reviewed_edit(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """web03 runs in kvm2's libvirt with no resource: the review suggests its entry from the
    cluster (the XML beside the other VMs' on the declared storage, their transport, the node
    it runs on) and shows the enrollment's first step; confirmed, the file has those lines."""
    ctl, client, desired, cib_file = served
    add_outside_domain(cib_file.with_name("kvm2.xml"), "web03")
    ctl.run_pass(now=time.time())
    (row,) = [r for r in ctl.last_rows if r.vm == "web03"]
    assert row.health == "outside" and row.libvirt == (DomainOn(node="kvm2", state="running"),)
    token = client.token("ops")
    before = desired.read_text()
    code, review = client.call("POST", "/api/edits/review", "ops",
                               {"edit": {"type": "enroll", "vm": "web03"}}, token)
    assert code == 200 and review["valid"] is True, review
    added = [line for line in str(review["diff"]).splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+  - name: web03", "+    config: /kvm/storage/xml/web03.xml",
                     "+    migration_transport: ssh", "+    storage: [gfs2_storage]",
                     "+    placement: {prefer: kvm2}"], added
    assert review["subject"] == {"resource": "vm-web03", "node": None}
    # the enrollment's first step: no node has its XML yet, kvm2's agent writes it from libvirt
    assert [(a["action"], a["verdict"]) for a in review["actions"]] == [  # type: ignore[index]
        ("write web03's XML from kvm2's libvirt to /kvm/storage/xml/web03.xml", "admitted")]
    assert desired.read_text() == before
    code, done = client.call("POST", "/api/edits/confirm", "ops", {
        "review_id": review["review_id"]}, token)
    assert code == 200 and done["written"] is True, done
    changed = [line for line in difflib.unified_diff(before.splitlines(),
                                                     desired.read_text().splitlines(),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == added  # after the last VM, every other byte as it was
    # a second review of the same: it is in the file now
    code, again = client.call("POST", "/api/edits/review", "ops",
                              {"edit": {"type": "enroll", "vm": "web03"}}, token)
    assert code == 409 and "in the desired file already" in str(again["error"])


def test_a_review_right_after_kvm_warden_changed_the_vm_still_shows_what_it_will_do(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """kvm-warden set db01's placement 2 s ago (its 10 s cooldown runs): the review shows the
    move and Pacemaker's transition anyway, and says when the loop will make it."""
    ctl, client, _, cib_file = served
    where = cibs.locate(cib_file, "vm-db01")
    target = next(n for n in cibs.NODES if n not in where)
    # the service's ledger as its pass saved it (what reviews read)
    ctl.ledger_file = LedgerFile(cib_file.parent / "state")
    ctl.ledger.moves.clear()  # the fixture's passes ran at instants still to come
    ctl.ledger.last_change["constraint:warden-prefer-vm-db01"] = time.time() - 2.0
    ctl.ledger_file.save(ctl.ledger, time.time())
    code, review = client.call("POST", "/api/edits/review", "ops",
                               {"edit": {"type": "place", "vm": "db01", "node": target}},
                               client.token("ops"))
    assert code == 200, review
    (move,) = review["actions"]
    assert move["verdict"] == "admitted", move  # type: ignore[index]
    assert "once its cooldown is over (8 s)" in move["detail"]  # type: ignore[index]
    assert review["transition"] == [{"resource": "vm-db01", "action": "migrate",
                                     "from": where[0], "to": target}]
    # the service's own memory is untouched: the loop still waits the cooldown out
    assert "constraint:warden-prefer-vm-db01" in ctl.ledger.last_change


def test_a_confirm_writes_what_was_reviewed_and_nothing_else(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """Issue "Safe by default", 4: the server keeps the review; confirm takes only its id."""
    ctl, client, desired, cib_file = served
    token = client.token("ops")
    where = cibs.locate(cib_file, "vm-web01")
    target = next(n for n in cibs.NODES if n not in where)
    code, review = client.call("POST", "/api/edits/review", "ops",
                               {"edit": {"type": "place", "vm": "web01", "node": target}}, token)
    assert code == 200 and isinstance(review["review_id"], str), review
    before = desired.read_text()
    # Another edit sent with the file's digest, as the old confirm took it: not a review.
    code, doc = client.call("POST", "/api/edits/confirm", "ops", {
        "edit": {"type": "run-state", "vm": "db01", "state": "stopped"},
        "file_sha256": review["file_sha256"], "cib_version": review["cib_version"]}, token)
    assert code == 400 and desired.read_text() == before, doc
    code, doc = client.call("POST", "/api/edits/confirm", "ops", {"review_id": "made-up"}, token)
    assert code == 409 and doc["stale"] is True and desired.read_text() == before
    # The CIB's configuration moves after the review: always checked.
    cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "cluster-recheck-interval",
               "--update", "7min"], cib_file)
    ctl.run_pass(now=time.time() + 200)
    code, doc = client.call("POST", "/api/edits/confirm", "ops",
                            {"review_id": review["review_id"]}, token)
    assert code == 409 and "configuration changed" in str(doc["error"]) and \
        desired.read_text() == before, doc
    # A fresh review confirms once; its id is used up.
    code, review = client.call("POST", "/api/edits/review", "ops",
                               {"edit": {"type": "place", "vm": "web01", "node": target}}, token)
    assert code == 200
    code, done = client.call("POST", "/api/edits/confirm", "ops",
                             {"review_id": review["review_id"]}, token)
    assert code == 200 and done["written"] is True and f"prefer: {target}" in desired.read_text()
    code, doc = client.call("POST", "/api/edits/confirm", "ops",
                            {"review_id": review["review_id"]}, token)
    assert code == 409 and doc["stale"] is True


def test_an_enrollment_of_a_domain_that_runs_nowhere_is_refused_even_with_every_field(
        served: tuple[Controller, Client, Path, Path]) -> None:
    _, client, desired, _ = served
    before = desired.read_text()
    code, doc = client.call("POST", "/api/edits/review", "ops", {"edit": {
        "type": "enroll", "vm": "ghost1", "config": "/kvm/storage/xml/ghost1.xml",
        "migration_transport": "tcp", "storage": "gfs2_storage", "prefer": "kvm3"}},
        client.token("ops"))
    assert code == 409 and "ghost1 runs on no node" in str(doc["error"]), doc
    assert desired.read_text() == before


@pytest.mark.parametrize("char", ["\u0085", "\u2028", "\u2029", "\x9b", "\ufeff"])
def test_a_character_yaml_breaks_lines_at_never_reaches_the_file(
        served: tuple[Controller, Client, Path, Path], char: str) -> None:
    """One U+0085 in an enrollment path used to split the file's line: every later review
    then answered 409 "edit it by hand". Refused up front now, and later edits still work."""
    ctl, client, desired, cib_file = served
    add_outside_domain(cib_file.with_name("kvm2.xml"), "web03")
    ctl.run_pass(now=time.time())
    token = client.token("ops")
    before = desired.read_text()
    code, doc = client.call("POST", "/api/edits/review", "ops", {"edit": {
        "type": "enroll", "vm": "web03", "config": f"/kvm/storage/xml/web{char}03.xml"}}, token)
    assert code == 409 and "printable" in str(doc["error"]), doc
    assert desired.read_text() == before
    code, doc = client.call("POST", "/api/edits/review", "ops",
                            {"edit": {"type": "run-state", "vm": "db01", "state": "stopped"}},
                            token)
    assert code == 200 and doc["valid"] is True


def test_deeply_nested_json_is_a_clear_400(served: tuple[Controller, Client, Path, Path]) -> None:
    _, client, desired, _ = served
    depth = 20_000  # 40 KB: inside the 64 KiB body limit, far past the parser's recursion
    before = desired.read_text()
    token = client.token("ops")
    for path, key in (("/api/edits/review", "edit"), ("/api/edits/confirm", "review_id")):
        raw = f'{{"{key}": {"[" * depth}{"]" * depth}}}'.encode()
        code, doc = client.call("POST", path, "ops", csrf=token, raw=raw)
        assert code == 400 and "nested too deeply" in str(doc["error"]), (path, doc)
    assert desired.read_text() == before


def _confirm(client: Client, edit: dict[str, object]) -> None:
    token = client.token("ops")
    code, review = client.call("POST", "/api/edits/review", "ops", {"edit": edit}, token)
    assert code == 200 and review["valid"] is True, review
    code, done = client.call("POST", "/api/edits/confirm", "ops",
                             {"review_id": review["review_id"]}, token)
    assert code == 200 and done["written"] is True, done


def _standby(cib_file: Path, node: str) -> bool:
    out = cibs.tool(["crm_mon", "-1", "--output-as=xml"], cib_file)
    return bool(re.search(rf'<node name="{node}"[^>]*standby="true"', out))


def test_drain_then_bring_online_from_the_web_view_does_what_each_says(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """Issue "Day one", 1: "bring online" after a web drain left the node in standby. Each
    button's confirm, carried out by the loop, reaches the state its name promises, as
    Pacemaker's own crm_mon says."""
    ctl, client, desired, cib_file = served
    node = cibs.locate(cib_file, "vm-db01")[0]
    # passes 11 s apart on the guard's clock (past its cooldowns), within its freshness bound
    _confirm(client, {"type": "node-state", "node": node, "state": "standby"})
    assert ctl.desired.poll()
    for i in range(4):
        ctl.run_pass(now=time.time() + 11 * i)
    assert 'name="migration-limit" value="2"' in cibs.tool(
        ["cibadmin", "--query", "--scope", "crm_config"], cib_file)
    assert _standby(cib_file, node) and node not in (
        cibs.locate(cib_file, "vm-db01") + cibs.locate(cib_file, "vm-web01")
        + cibs.locate(cib_file, "vm-web02"))
    _confirm(client, {"type": "node-state", "node": node, "state": "online"})
    assert f"{{name: {node}, state: online}}" in desired.read_text()
    assert ctl.desired.poll()
    for i in range(4, 8):
        ctl.run_pass(now=time.time() + 11 * i)
    assert not _standby(cib_file, node)
    # Issue "Day one", 4: the drain's migration-limit is put back as it was (unset here).
    assert "migration-limit" not in cibs.tool(
        ["cibadmin", "--query", "--scope", "crm_config"], cib_file)


def test_a_web_edit_of_a_symlinked_desired_file_rewrites_its_target_keeping_its_owner(
        served: tuple[Controller, Client, Path, Path]) -> None:
    import os
    import pwd
    import stat

    _, client, desired, _ = served
    real = desired.parent / "etc" / "desired.yaml"
    real.parent.mkdir()
    real.write_text(desired.read_text())
    nobody = pwd.getpwnam("nobody")
    os.chown(real, nobody.pw_uid, nobody.pw_gid)
    real.chmod(0o640)
    desired.unlink()
    desired.symlink_to(real)
    _confirm(client, {"type": "run-state", "vm": "db01", "state": "stopped"})
    assert desired.is_symlink() and desired.resolve() == real
    st = real.stat()
    assert "state: stopped" in real.read_text()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        nobody.pw_uid, nobody.pw_gid, 0o640)


def test_concurrent_reviews_wait_their_turn_instead_of_a_503(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """Issue "Safe by default", 7: one review at a time (each runs the scheduler) used to
    refuse every other with 503; they now queue, first come first served."""
    import threading

    _, client, _, _ = served
    token = client.token("ops")
    codes: list[int] = []

    def review() -> None:
        codes.append(client.call("POST", "/api/edits/review", "ops", {"edit": {
            "type": "run-state", "vm": "db01", "state": "stopped"}}, token)[0])

    threads = [threading.Thread(target=review) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [200] * 6, codes


def _verdicts(client: Client, desired: Path, cib_file: Path) -> tuple[set[str], ...]:
    """What drifts, as `plan --json` says (its own reading of the CIB), as the web view's
    header says, as the rows say, and how many kvm_warden_drift_objects counts."""
    from controller import metrics

    assert client.view is not None
    client.view.passed()  # what the loop's on_pass does: the pages re-read
    out = subprocess.run([sys.executable, "-m", "controller.app.cli", "plan", "--desired",
                          str(desired), "--cib", str(cib_file), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 2), out.stderr
    plan = json.loads(out.stdout)
    assert plan["matches"] is (not plan["drift"])
    code, doc = client.call("GET", "/api/vms", "ops")
    assert code == 200
    summary = doc["summary"]
    assert isinstance(summary, dict) and summary["drifting"] == len(summary["drift"])
    rows = {r["resource"] for r in doc["vms"] if r["drift"]}  # type: ignore[index,union-attr]
    gauge = sum(s.value for m in metrics.REGISTRY.collect()
                if m.name == "kvm_warden_drift_objects" for s in m.samples)
    web = set(summary["drift"])
    assert gauge == len(web) and rows <= web
    return {i["subject"] for i in plan["drift"]}, web, rows


def test_plan_the_web_view_and_the_gauge_give_one_drift_verdict(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """Issue "Day one", 1: `plan` said "matches" while the web view said "2 drifting". On a
    held move, a drained node and a placement that cannot be met, they say the same."""
    ctl, client, desired, cib_file = served
    # past the fixture's passes on the guard's clock, within its freshness bound (120 s)
    t = time.time() + 50
    # db01 prefers kvm3, the node drained below
    text = desired.read_text().replace("  - name: db01", "  - name: db01\n    placement: {prefer: kvm3}")
    desired.write_text(text)
    assert ctl.desired.poll()
    ctl.run_pass(now=t - 2)
    ctl.run_pass(now=t - 1)  # the loop's pass after a change: it re-reads what it did
    assert cibs.locate(cib_file, "vm-db01") == ["kvm3"]
    assert _verdicts(client, desired, cib_file) == (set(), set(), set())
    # A move the preview holds (Pacemaker would move web01 too, unasked): the loop shows it
    # held, and plan the same; all say web02 drifts, and web01 (what holds it).
    desired.write_text(text.replace("prefer: kvm1", "prefer: kvm3"))
    assert ctl.desired.poll()
    ctl.run_pass(now=t)
    assert cibs.locate(cib_file, "vm-web02") == ["kvm1"]
    assert any(not d.verdict.admitted for d in ctl.last.decisions)  # type: ignore[union-attr]
    both = {"vm-web01", "vm-web02"}  # web01: the move Pacemaker would make unasked
    assert _verdicts(client, desired, cib_file) == (both, both, both)
    desired.write_text(text)
    assert ctl.desired.poll()
    ctl.run_pass(now=t + 1)
    assert _verdicts(client, desired, cib_file) == (set(), set(), set())
    # A drained node: once drained nothing drifts, and db01 (which prefers kvm3) says why it
    # runs elsewhere instead of "running on kvm3, drift: none".
    _confirm(client, {"type": "node-state", "node": "kvm3", "state": "standby"})
    assert ctl.desired.poll()
    for i in range(1, 5):
        ctl.run_pass(now=t + 1 + 11 * i)
    ctl.run_pass(now=t + 46)
    assert _standby(cib_file, "kvm3") and cibs.locate(cib_file, "vm-db01") != ["kvm3"]
    assert _verdicts(client, desired, cib_file) == (set(), set(), set())
    code, doc = client.call("GET", "/api/vms/db01", "ops")
    assert doc["vm"]["desired_note"] == (  # type: ignore[index]
        "kvm3 is drained in the file: elsewhere until it is back")
    # A placement that cannot be met (db01 allowed only on the drained node): drift in all
    # three, pending at first, a finding once it lasts.
    desired.write_text(desired.read_text().replace("{prefer: kvm3}", "{prefer: kvm3, allowed: [kvm3]}"))
    assert ctl.desired.poll()
    ctl.run_pass(now=t + 50)
    assert _verdicts(client, desired, cib_file) == ({"vm-db01"}, {"vm-db01"}, {"vm-db01"})
    ctl.run_pass(now=t + 67)
    assert _verdicts(client, desired, cib_file) == ({"vm-db01"}, {"vm-db01"}, {"vm-db01"})


def _node_flag(cib_file: Path, node: str, flag: str) -> bool:
    out = cibs.tool(["crm_mon", "-1", "--output-as=xml"], cib_file)
    return bool(re.search(rf'<node name="{node}"[^>]*{flag}="true"', out))


def test_every_web_action_reaches_the_cluster_state_its_name_promises(
        served: tuple[Controller, Client, Path, Path]) -> None:
    """Issue "Day one", 1: a button must do what it says. Each edit kind the web view offers,
    confirmed and carried out by the loop, as Pacemaker's own tools then say (move, clean up,
    drain/bring online and enroll have their own tests)."""
    ctl, client, desired, cib_file = served
    t = time.time() + 12

    def converge(edit: dict[str, object], done: Callable[[], bool]) -> None:
        nonlocal t
        _confirm(client, edit)
        assert ctl.desired.poll()
        for _ in range(4):  # passes 11 s apart on the guard's clock: past its cooldowns
            ctl.run_pass(now=t)
            t += 11
            if done():
                return
        raise AssertionError(f"{edit} did not reach its state")

    # stop: stopped; start: running
    converge({"type": "run-state", "vm": "db01", "state": "stopped"},
             lambda: cibs.locate(cib_file, "vm-db01") == [])
    converge({"type": "run-state", "vm": "db01", "state": "running"},
             lambda: len(cibs.locate(cib_file, "vm-db01")) == 1)
    # maintenance: in maintenance; bring online: online
    converge({"type": "node-state", "node": "kvm3", "state": "maintenance"},
             lambda: _node_flag(cib_file, "kvm3", "maintenance"))
    converge({"type": "node-state", "node": "kvm3", "state": "online"},
             lambda: not _node_flag(cib_file, "kvm3", "maintenance"))
    # retire: out of Pacemaker's configuration (the file keeps it as `absent`)
    converge({"type": "retire", "vm": "db01", "keep_running": True},
             lambda: "vm-db01" not in cibs.tool(["cibadmin", "--query", "--scope", "resources"],
                                                cib_file))
    assert re.search(r"- name: db01[^\n]*\n    state: absent\n    keep_running: true",
                     desired.read_text())
