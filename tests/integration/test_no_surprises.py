"""Never surprise the operator: no VM moves unless the desired file asked for that VM, and a
failed VM never looks healthy. Judged by Pacemaker's own tools (CIB_file=, crm_simulate as the
scheduler) on the embedded cluster, which sets no resource-stickiness."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.loop import Controller
from controller.model.actions import Finding
from tests import cibs
from tests.cibs import SEED, STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, cli, simulate, vm
from tests.simulated import simulated

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
STORAGE = """storage:
  - name: gfs2_storage
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
    requires: [clvmd-clone, dlm-clone]
"""


def converged(tmp_path: Path) -> tuple[Controller, Path]:
    sim, store, _ = simulated(tmp_path)
    ctl = Controller(source=sim.read, actuator=PacemakerActuator(str(sim.cib_file)),
                     desired=store, after_apply=sim.settle)
    for _ in range(5):
        if not ctl.run_pass(now=ctl_time(ctl)).decisions:
            break
    return ctl, sim.cib_file


def ctl_time(ctl: Controller) -> float:
    """Each pass 11 s further than the last (past the 10 s cooldown, within the 120 s
    freshness of the reading): cooldowns never hide a decision here."""
    n = getattr(ctl, "_n", 0) + 1
    ctl._n = n  # type: ignore[attr-defined]
    return time.time() + 11.0 * n


def test_a_manual_move_stays_where_the_operator_put_it(tmp_path: Path) -> None:
    ctl, cib_file = converged(tmp_path)
    assert cibs.locate(cib_file, "vm-db01") == ["kvm3"]
    # `pcs resource move vm-db01 kvm1` on a VM the file gives no placement.
    cibs.tool(["crm_resource", "--move", "--resource", "vm-db01", "--node", "kvm1"], cib_file)
    ctl.after_apply()  # type: ignore[misc]  # the simulated cluster executes the transition
    assert cibs.locate(cib_file, "vm-db01") == ["kvm1"]
    for _ in range(3):
        result = ctl.run_pass(now=ctl_time(ctl))
    held = [d for d in result.decisions if getattr(d.action, "id", "") == "cli-prefer-vm-db01"]
    assert [d.verdict.reason for d in held] == ["would-move-unasked"]
    assert "vm-db01 kvm1 → kvm3" in held[0].verdict.detail
    assert any(f.kind == "unasked-move" and f.rsc == "vm-db01" for f in result.findings)
    assert "cli-prefer-vm-db01" in cibs.tool(["cibadmin", "--query", "--scope", "constraints"],
                                             cib_file)
    assert cibs.locate(cib_file, "vm-db01") == ["kvm1"]  # not moved back


def test_a_storage_constraint_that_would_move_a_vm_is_held(tmp_path: Path) -> None:
    # vm-x runs on kvm3 (an operator's location); the GFS2 clone cannot run there: the
    # colocation the storage safety wants would make Pacemaker move vm-x.
    work = simulate(tmp_path / "c.xml", cib(
        STORAGE_CHAIN + vm("vm-x"), STORAGE_CONSTRAINTS
        + '<rsc_location id="x-on-kvm3" rsc="vm-x" node="kvm3" score="100"/>'
        '<rsc_location id="no-gfs2-kvm3" rsc="gfs2_res01-clone" node="kvm3" score="-INFINITY"/>'))
    assert cibs.locate(work, "vm-x") == ["kvm3"]
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\n" + STORAGE + "vms:\n  - name: x\n    storage: [gfs2_storage]\n")
    out = cli("plan", "--desired", str(desired), "--cib", str(work), "--apply", "--json")
    doc = json.loads(out.stdout)
    colo = [a for a in doc["actions"] if a["kind"] == "AddColocation" and a["rsc"] == "vm-x"]
    assert [a["verdict"] for a in colo] == ["would-move-unasked"], doc["actions"]
    assert any(f["kind"] == "unasked-move" and f["rsc"] == "vm-x" for f in doc["findings"])
    assert cibs.locate(work, "vm-x") == ["kvm3"]


def failed_monitor(tmp_path: Path) -> Path:
    """web02's monitor on kvm2 failed (`crm_simulate -i`): crm_mon prints `FAILED kvm2`."""
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    out = tmp_path / "failed.xml"
    subprocess.run(["crm_simulate", "-x", str(work), "-O", str(out),
                    "-i", "vm-web02_monitor_10000@kvm2=7"], check=True, capture_output=True,
                   timeout=60)
    return out


def test_a_failed_vm_is_failed_in_status_and_plan(tmp_path: Path) -> None:
    work = failed_monitor(tmp_path)
    assert "FAILED kvm2" in cibs.tool(["crm_mon", "-1"], work)
    desired = cibs.EXAMPLE
    rows = json.loads(cli("status", "--cib", str(work), "--desired", str(desired), "--json")
                      .stdout)
    web02 = next(r for r in rows if r["vm"] == "web02")
    assert web02["state"] == "Started" and web02["health"] == "failed"
    assert "FAILED on kvm2" in web02["flags"] and "fail-count 1 on kvm2" in web02["flags"]
    assert web02["fail_counts"] == {"kvm2": 1}
    assert any(f.startswith("monitor on kvm2: not running (rc 7") for f in web02["failures"])
    assert [f["kind"] for f in web02["findings"]] == ["vm-failed"]
    text = cli("status", "--cib", str(work), "--desired", str(desired)).stdout
    assert "FAILED (Started)" in text
    findings = json.loads(cli("plan", "--desired", str(desired), "--cib", str(work),
                              "--json").stdout)["findings"]
    (f,) = [f for f in findings if f["kind"] == "vm-failed"]
    assert (f["rsc"], f["node"], f["severity"]) == ("vm-web02", "kvm2", "critical")


def test_the_service_shows_a_failed_vm_failed_everywhere(tmp_path: Path) -> None:
    ctl, cib_file = converged(tmp_path)
    injected = tmp_path / "injected.xml"
    subprocess.run(["crm_simulate", "-x", str(cib_file), "-O", str(injected),
                    "-i", "vm-web01_monitor_10000@kvm2=7"], check=True, capture_output=True,
                   timeout=60)
    shutil.move(injected, cib_file)
    ctl.run_pass(now=ctl_time(ctl))
    row = next(r for r in ctl.view.rows if r.vm == "web01")
    assert row.health == "failed" and [f.kind for f in row.findings] == ["vm-failed"]
    from controller import metrics

    body = metrics.render().decode()
    assert 'kvm_warden_vm_health{health="failed",vm="web01"} 1.0' in body


def unsatisfiable(tmp_path: Path, edit: Callable[[str], str], before: Callable[[Path], None]
                  ) -> list[Finding]:
    """The embedded cluster converged, then the desired file edited; the findings after."""
    ctl, cib_file = converged(tmp_path)
    before(cib_file)
    desired = tmp_path / "desired.yaml"
    desired.write_text(edit(desired.read_text()))
    time.sleep(0.01)
    assert ctl.desired.poll()
    found: list[Finding] = []
    for _ in range(4):
        found = [f for f in ctl.run_pass(now=ctl_time(ctl)).findings
                 if f.kind == "placement-unsatisfiable"]
    return found


def db01_prefers(node: str) -> Callable[[str], str]:
    return lambda text: text.replace("  - name: db01                           # resource vm-db01; "
                                     "its disk lies under /kvm/storage\n    state: running\n",
                                     "  - name: db01\n    state: running\n    placement:\n"
                                     f"      prefer: {node}\n")


def test_a_ban_on_the_preferred_node_is_named(tmp_path: Path) -> None:
    def ban(cib_file: Path) -> None:  # `pcs resource ban vm-db01 kvm1`
        cibs.tool(["crm_resource", "--ban", "--resource", "vm-db01", "--node", "kvm1"], cib_file)

    (f,) = unsatisfiable(tmp_path, db01_prefers("kvm1"), ban)
    assert (f.rsc, f.node) == ("vm-db01", "kvm1")
    assert f.reason == "OperatorBan"
    assert "pcs resource clear vm-db01" in f.message  # how to lift it, told


def test_anti_affinity_with_the_vm_on_the_preferred_node_is_named(tmp_path: Path) -> None:
    def db01_kvm2_apart_from_a_pinned_web01(text: str) -> str:
        # db01 (the file's last VM) prefers kvm2 and never shares a node with web01, which
        # may only run on kvm2: nothing can give way.
        text = db01_prefers("kvm2")(text).replace("      allowed: [kvm1, kvm2]",
                                                  "      allowed: [kvm2]")
        return text.replace("      prefer: kvm2\npolicy:",
                            "      prefer: kvm2\n    anti_affinity: [web01]\npolicy:")

    (f,) = unsatisfiable(tmp_path, db01_kvm2_apart_from_a_pinned_web01, lambda cib_file: None)
    assert (f.rsc, f.node) == ("vm-db01", "kvm2")
    assert "anti-affinity warden-anti-vm-db01-vm-web01 with vm-web01, which runs on kvm2" \
        in f.message


def test_a_preferred_node_in_standby_is_named(tmp_path: Path) -> None:
    def standby_kvm1(cib_file: Path) -> None:
        cibs.tool(["crm_attribute", "--node", "kvm1", "--name", "standby", "--update", "on"],
                  cib_file)

    found = unsatisfiable(tmp_path, db01_prefers("kvm1"), standby_kvm1)
    (f,) = [f for f in found if f.rsc == "vm-db01"]  # (web02 prefers kvm1 too)
    assert f.node == "kvm1" and "kvm1 is in standby" in f.message


def test_moving_a_vm_that_would_push_another_is_held_and_explained(tmp_path: Path) -> None:
    # web02 asked onto kvm2, where web01 runs (anti-affinity): Pacemaker would move web01,
    # which nothing asked to move. The change waits and says so.
    ctl, cib_file = converged(tmp_path)
    cibs.tool(["crm_resource", "--clear", "--resource", "vm-web02"], cib_file)
    desired = tmp_path / "desired.yaml"
    desired.write_text(desired.read_text().replace("    placement:\n      prefer: kvm1\n",
                                                   "    placement:\n      prefer: kvm2\n"))
    time.sleep(0.01)
    assert ctl.desired.poll()
    result = ctl.run_pass(now=ctl_time(ctl))
    (d,) = [d for d in result.decisions if getattr(d.action, "id", "") == "warden-prefer-vm-web02"]
    assert d.verdict.reason == "would-move-unasked" and "vm-web01" in d.verdict.detail
    assert any(f.kind == "unasked-move" and f.rsc == "vm-web01" for f in result.findings)
    assert cibs.locate(cib_file, "vm-web01") == ["kvm2"]


def simulated_failure(tmp_path: Path, *argv: str, apply_example: bool = False) -> list[dict]:  # type: ignore[type-arg]
    """The seed with the scheduler run once while some operation fails (`crm_simulate -F`,
    `-i`); `status --json`'s rows of the result."""
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    if apply_example:
        assert cli("plan", "--desired", str(cibs.EXAMPLE), "--cib", str(work), "--apply",
                   "--state-dir", str(tmp_path / "s")).returncode == 0
    out = tmp_path / "after.xml"
    subprocess.run(["crm_simulate", "-x", str(work), "-S", "-O", str(out), *argv], check=True,
                   capture_output=True, timeout=120)
    rows: list[dict] = json.loads(cli("status", "--cib", str(out), "--json").stdout)  # type: ignore[type-arg]
    return rows


def test_a_blocked_vm_is_blocked_everywhere(tmp_path: Path) -> None:
    # web02's monitor fails, then its stop too; without fencing Pacemaker blocks it.
    rows = simulated_failure(tmp_path, "-i", "vm-web02_monitor_10000@kvm2=1",
                             "-F", "vm-web02_stop_0@kvm2=1")
    web02 = next(r for r in rows if r["vm"] == "web02")
    assert web02["health"] == "failed"
    assert any(f.startswith("blocked on kvm2") for f in web02["flags"])
    assert any(f.startswith("stop on kvm2: generic error (rc 1") for f in web02["failures"])


def test_a_failed_live_migration_is_failed_on_both_nodes(tmp_path: Path) -> None:
    # The example moves web01 kvm1 -> kvm2 live; its migrate_to fails.
    rows = simulated_failure(tmp_path, "-F", "vm-web01_migrate_to_0@kvm1=1",
                             apply_example=True)
    web01 = next(r for r in rows if r["vm"] == "web01")
    assert web01["health"] == "failed" and "FAILED on kvm1, kvm2" in web01["flags"]
    assert "fail-count 1 on kvm1 of migration-threshold 3" in web01["flags"]
    assert any(f.startswith("migrate_to on kvm1") for f in web01["failures"])


def test_a_vm_whose_start_fails_everywhere_is_failed_not_stopped(tmp_path: Path) -> None:
    # A broken config: the start fails on every node (rc 5, not installed); Pacemaker bans
    # it from each and leaves it Stopped, no longer flagged failed -- and it should run.
    work = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + vm("vm-web01"), STORAGE_CONSTRAINTS),
                    inject=tuple(f"vm-web01_start_0@{n}=5" for n in cibs.NODES))
    mon = cibs.tool(["crm_mon", "-1", "--output-as=xml"], work)
    assert 'id="vm-web01"' in mon and 'role="Stopped"' in mon.split('id="vm-web01"')[1][:300]
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\n" + STORAGE + "vms:\n  - name: web01\n    storage: "
                       "[gfs2_storage]\n")
    rows = json.loads(cli("status", "--cib", str(work), "--desired", str(desired), "--json")
                      .stdout)
    web01 = next(r for r in rows if r["vm"] == "web01")
    assert web01["health"] == "failed"
    assert web01["flags"][0] == "cannot start: its start failed on kvm1, kvm2, kvm3"
    findings = json.loads(cli("plan", "--desired", str(desired), "--cib", str(work),
                              "--json").stdout)["findings"]
    (f,) = [f for f in findings if f["kind"] == "vm-failed"]
    assert (f["severity"], f["reason"]) == ("critical", "CannotStart")  # plan --json has it
    assert "start on kvm1: not installed" in f["message"]  # the agent's own words, told
    # asked to be stopped, the same history is no failure
    desired.write_text(desired.read_text() + "    state: stopped\n")
    findings = json.loads(cli("plan", "--desired", str(desired), "--cib", str(work),
                              "--json").stdout)["findings"]
    assert not [f for f in findings if f["kind"] == "vm-failed"]


def test_the_vm_page_shows_pacemakers_own_node_scores(tmp_path: Path) -> None:
    from controller.app.web import WebView

    ctl, cib_file = converged(tmp_path)
    cibs.tool(["crm_resource", "--ban", "--resource", "vm-web01", "--node", "kvm3"], cib_file)
    ctl.run_pass(now=ctl_time(ctl))
    view = WebView(ctl)
    doc = view.scores("web01")
    assert doc is not None and doc["resource"] == "vm-web01"
    assert doc["scores"]["kvm3"] == "-INFINITY"  # the operator's ban, in the scheduler's words
    # the same numbers crm_simulate prints for it
    out = subprocess.run(["crm_simulate", "-x", str(cib_file), "-s"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    for node, score in doc["scores"].items():
        assert f"pcmk__primitive_assign: vm-web01 allocation score on {node}: {score}" in out
    assert view.scores("nosuch") is None
