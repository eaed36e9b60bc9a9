"""Reconcilers, guard and actuator on scenario CIBs, judged by Pacemaker's own scheduler.

`kvm-warden plan --apply --cib` writes the changes into a copy of the CIB; then `crm_verify`
must accept the result and `crm_simulate -S` (the real scheduler) must put every VM where the
desired file says. Expected placements come from the desired file, never from kvm-warden.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from lxml import etree

from controller.actuators.pacemaker import CibConflict, PacemakerActuator
from controller.engine.decide import decide
from controller.engine.guard import Guard
from controller.engine.ledger import Ledger
from controller.engine.observe import observe_once
from controller.model.actions import Cleanup, RemoveConstraint
from controller.model.context import CleanupHistory
from controller.model.desired import load_desired, parse_desired
from controller.model.index import build_index
from tests import cibs
from tests.cibs import STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"


def plan(desired: Path, cib_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "plan", "--desired", str(desired), "--cib",
         str(cib_file), *extra],
        capture_output=True, text=True, timeout=120,
    )


def schedule(cib_file: Path) -> tuple[Path, str]:
    """Let the real scheduler run the transition; return the settled CIB and its summary."""
    out = cib_file.with_suffix(".settled.xml")
    res = subprocess.run(["crm_simulate", "-x", str(cib_file), "-S", "-O", str(out)],
                         capture_output=True, text=True, timeout=120, check=True)
    return out, res.stdout


def constraints(cib_file: Path) -> dict[str, etree._Element]:
    xml = cibs.tool(["cibadmin", "--query", "--scope", "constraints"], cib_file)
    return {str(el.get("id")): el for el in etree.fromstring(xml.encode())}


def crm_property(cib_file: Path, name: str) -> str:
    return cibs.tool(["crm_attribute", "--type", "crm_config", "--name", name, "--query",
                      "--quiet"], cib_file).strip()


def test_seed_converges_to_the_example_desired_state(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    first = plan(EXAMPLE, work)
    assert first.returncode == 2, first.stderr
    assert "REFUSED" not in first.stdout
    applied = plan(EXAMPLE, work, "--apply")
    assert applied.returncode == 0, applied.stderr
    subprocess.run(["crm_verify", "-x", str(work)], check=True, capture_output=True, timeout=60)

    # Idempotence: a second plan on the applied file proposes nothing -- and does not claim a
    # match while the moves are Pacemaker's to make (offline here: nothing executes them).
    again = plan(EXAMPLE, work)
    assert again.returncode == 0 and "No change to make; not met yet:" in again.stdout
    assert "0 action(s)" in again.stdout and "vm-web01@kvm2: pending" in again.stdout

    settled, transition = schedule(work)
    # web01: prefer kvm2 within allowed [kvm1, kvm2]; web02 prefers kvm1; anti-affine apart.
    assert cibs.locate(settled, "vm-web01") == ["kvm2"]
    assert cibs.locate(settled, "vm-web02") == ["kvm1"]
    # Pacemaker moves them live (allow-migrate=true): migrate_to/migrate_from, not stop/start.
    assert "Migrate    vm-web01     ( kvm1 -> kvm2 )" in transition
    # (a live migration ends with a "stop" on the source that only cleans up; the "start" is a
    # pseudo action, never a real cold start on the target)
    assert "vm-web01        migrate_from on kvm2" in transition
    assert "vm-web01        start on" not in transition

    cons = constraints(work)
    # db01's config lies under /kvm/storage: it gets order + colocation with the GFS2 clone.
    order = cons["warden-order-gfs2_res01-clone-vm-db01"]
    assert (order.get("first"), order.get("then"), order.get("kind")) == (
        "gfs2_res01-clone", "vm-db01", "Mandatory")
    colo = cons["warden-colo-vm-db01-gfs2_res01-clone"]
    assert (colo.get("rsc"), colo.get("with-rsc"), colo.get("score")) == (
        "vm-db01", "gfs2_res01-clone", "INFINITY")
    # web01/web02 already had pcs-made equivalents: no duplicates of those.
    assert "warden-order-gfs2_res01-clone-vm-web01" not in cons
    # The operator's ban stays (clearing it is `pcs resource clear`, the operator's call);
    # foreign constraints survive untouched.
    assert cons["cli-ban-vm-web02-on-kvm3"].get("score") == "-INFINITY"
    assert cons["location-vm-web01-kvm1-100"].get("score") == "100"
    assert "order-dlm-clone-clvmd-clone-mandatory" in cons
    assert crm_property(work, "no-quorum-policy") == "freeze"
    assert crm_property(work, "stonith-enabled") == "true"


def test_allowed_nodes_hold_even_when_the_only_allowed_node_leaves(tmp_path: Path) -> None:
    desired = tmp_path / "d.yaml"
    desired.write_text(
        "version: 1\nvms:\n  - name: web01\n    placement: {allowed: [kvm3]}\n"
        "  - name: web02\n    placement: {allowed: [kvm1, kvm2], prefer: kvm2}\n"
        "    anti_affinity: [db01]\n  - name: db01\n    placement: {prefer: kvm2}\n"
    )
    work = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + vm("vm-web01") + vm("vm-web02")
                                            + vm("vm-db01"), STORAGE_CONSTRAINTS))
    assert plan(desired, work, "--apply").returncode == 0
    settled, _ = schedule(work)
    assert cibs.locate(settled, "vm-web01") == ["kvm3"]
    web02, db01 = cibs.locate(settled, "vm-web02"), cibs.locate(settled, "vm-db01")
    assert web02 == ["kvm2"] and db01 != web02  # anti-affinity wins over db01's soft prefer

    # kvm3 goes down: web01 must stop rather than run on a node it is not allowed on.
    down = tmp_path / "down.xml"
    subprocess.run(["crm_simulate", "-x", str(settled), "-d", "kvm3", "-S", "-O", str(down)],
                   check=True, capture_output=True, timeout=60)
    assert cibs.locate(down, "vm-web01") == []


def test_stopped_vm_gets_target_role_stopped(tmp_path: Path) -> None:
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\nvms:\n  - name: db01\n    state: stopped\n")
    work = simulate(tmp_path / "c.xml", cib(vm("vm-db01")))
    assert plan(desired, work, "--apply").returncode == 0
    settled, _ = schedule(work)
    assert cibs.locate(settled, "vm-db01") == []
    meta = cibs.tool(["crm_resource", "--resource", "vm-db01", "--meta", "--get-parameter",
                      "target-role"], work)
    assert meta.strip().endswith("Stopped")


def test_a_vm_removed_from_the_file_keeps_its_safety_until_retired_or_gone(tmp_path: Path) -> None:
    """web01 leaves the file while its resource runs (a rename, a typo, a deletion): nothing
    proves its anti-affinity and placement unwanted, so they stay, and a finding says why
    (issue "Day one", 2; Argo CD does not prune by default). What the file still names is
    kept in step: web02's preference, no longer asked for, goes."""
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    assert plan(EXAMPLE, work, "--apply").returncode == 0
    smaller = tmp_path / "d.yaml"
    smaller.write_text("version: 1\nvms:\n  - name: web02\n")
    out = plan(smaller, work, "--apply")
    assert out.returncode in (0, 2), out.stdout + out.stderr
    cons = constraints(work)
    assert {"warden-prefer-vm-web01", "warden-allowed-vm-web01",
            "warden-anti-vm-web01-vm-web02"} <= set(cons)
    assert "warden-prefer-vm-web02" not in cons
    assert "vm-web01 runs in the cluster but no VM of the desired file names it" in out.stdout
    assert "location-vm-web01-kvm1-100" in cons  # not ours: kept


@pytest.mark.parametrize(
    ("tweak", "reason"),
    [
        ("quorum", "no-quorum"),
        ("maintenance", "maintenance-mode"),
        ("unclean", "node-unclean"),
        ("dry_run", "dry-run"),
    ],
)
def test_guard_refuses_every_action_and_apply_changes_nothing(
    tmp_path: Path, tweak: str, reason: str
) -> None:
    work = tmp_path / "cib.xml"
    desired = EXAMPLE
    if tweak == "quorum":
        tree = etree.parse(str(SEED))
        tree.getroot().set("have-quorum", "0")
        tree.write(str(work))
    elif tweak == "maintenance":
        shutil.copy(SEED, work)
        cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "maintenance-mode",
                   "--update", "true"], work)
    elif tweak == "unclean":
        # Only with STONITH on does a lost node stay unclean until it is fenced.
        fenced = tmp_path / "fenced.xml"
        shutil.copy(SEED, fenced)
        cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
                   "--update", "true"], fenced)
        subprocess.run(["crm_simulate", "-x", str(fenced), "-f", "kvm3", "-O", str(work)],
                       check=True, capture_output=True, timeout=60)
    else:
        shutil.copy(SEED, work)
        desired = tmp_path / "dry.yaml"
        desired.write_text(EXAMPLE.read_text().replace("dry_run: false", "dry_run: true"))
    before = work.read_bytes()
    out = plan(desired, work, "--apply")
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("  + ")]
    assert lines and all(f"[REFUSED: {reason}]" in ln for ln in lines), out.stdout
    assert work.read_bytes() == before


def test_max_concurrent_migrations_admits_only_that_many_moves(tmp_path: Path) -> None:
    vms = "".join(vm(f"vm-v{i}") for i in range(6))
    work = simulate(tmp_path / "c.xml", cib(vms))
    placed = {f"v{i}": cibs.locate(work, f"vm-v{i}")[0] for i in range(6)}
    others = {n: next(x for x in cibs.NODES if x != n) for n in cibs.NODES}
    desired = tmp_path / "d.yaml"
    desired.write_text(
        "version: 1\npolicy: {max_concurrent_migrations: 2}\nvms:\n" + "".join(
            f"  - name: {v}\n    placement: {{prefer: {others[n]}}}\n" for v, n in placed.items())
    )
    out = plan(desired, work)
    assert out.stdout.count("[admitted]") == 2
    assert out.stdout.count("[REFUSED: max-concurrent-migrations]") == 4


def test_leftover_cli_prefer_is_kept_while_the_migration_is_in_progress(tmp_path: Path) -> None:
    base = simulate(tmp_path / "c.xml", cib(
        vm("vm-web01"),
        '<rsc_location id="l" rsc="vm-web01" node="kvm1" score="100"/>'))
    # An operator's `crm_resource --move` left cli-prefer-vm-web01 for kvm2 ...
    cibs.tool(["crm_resource", "--move", "--resource", "vm-web01", "--node", "kvm2"], base)
    assert "cli-prefer-vm-web01" in constraints(base)
    # ... and the migration is still running (migrate_to pending on kvm1).
    tree = etree.parse(str(base))
    for ns in tree.iter("node_state"):
        if ns.get("uname") == "kvm1":
            for op in ns.iter("lrm_rsc_op"):
                if op.get("id") == "vm-web01_last_0":
                    op.set("operation", "migrate_to")
                    op.set("operation_key", "vm-web01_migrate_to_0")
                    op.set("op-status", "-1")
                    op.set("rc-code", "193")
                    op.set("call-id", "-1")
    moving = tmp_path / "moving.xml"
    tree.write(str(moving))
    desired = tmp_path / "d.yaml"
    desired.write_text("version: 1\nvms:\n  - name: web01\n")
    assert "cli-prefer-vm-web01" not in plan(desired, moving).stdout

    # Once the scheduler has moved it, removing the leftover would move web01 back to kvm1
    # (the location l prefers kvm1, nothing makes it stay): the operator's move is not undone.
    done, _ = schedule(base)
    assert cibs.locate(done, "vm-web01") == ["kvm2"]
    out = plan(desired, done, "--apply", "--json")
    doc = json.loads(out.stdout)
    (removal,) = [a for a in doc["actions"] if a["id"] == "cli-prefer-vm-web01"]
    assert removal["verdict"] == "would-move-unasked"
    assert "live-migrate vm-web01 kvm2 → kvm1" in removal["detail"]
    (why,) = [f for f in doc["findings"] if f["kind"] == "unasked-move"]
    assert why["rsc"] == "vm-web01" and "resource-stickiness" in why["message"]
    assert "cli-prefer-vm-web01" in constraints(done)
    # With a resource-stickiness that outweighs the preference, the VM stays: the leftover goes.
    subprocess.run(["pcs", "-f", str(done), "resource", "defaults", "update",
                    "resource-stickiness=200"], check=True, capture_output=True, timeout=60)
    out = plan(desired, done, "--apply")
    assert "remove constraint cli-prefer-vm-web01" in out.stdout, out.stdout
    assert "cli-prefer-vm-web01" not in constraints(done)
    assert cibs.locate(schedule(done)[0], "vm-web01") == ["kvm2"]


def planned_on_a_seed_copy(tmp_path: Path) -> tuple[Path, bytes, list[Any]]:
    """A copy of the seed CIB, the bytes read from it, and the example's plan for it."""
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    observed, raw = observe_once(str(work))
    now = time.time()
    decisions, _ = decide(build_index(observed), load_desired(EXAMPLE), Guard(), now, now)
    return work, raw, [d.action for d in decisions]


def test_a_cib_changed_after_reading_is_a_conflict_not_an_overwrite(tmp_path: Path) -> None:
    work, raw, actions = planned_on_a_seed_copy(tmp_path)
    # Somebody else changes the CIB between our read and our patch.
    cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "cluster-recheck-interval",
               "--update", "5min"], work)
    with pytest.raises(CibConflict):
        PacemakerActuator(str(work)).apply(actions, cib=raw)
    assert crm_property(work, "cluster-recheck-interval") == "5min"
    assert "warden-prefer-vm-web01" not in constraints(work)


def test_failcount_is_cleaned_only_after_the_vm_runs_again(tmp_path: Path) -> None:
    desired = parse_desired("version: 1\nvms:\n  - name: web01\n")
    work = simulate(tmp_path / "c.xml", cib(vm("vm-web01"), '<rsc_location id="l" '
                                            'rsc="vm-web01" node="kvm1" score="100"/>'))
    # The monitor finds the guest gone; the transition to recover it has not run yet.
    failed = tmp_path / "failed.xml"
    subprocess.run(["crm_simulate", "-x", str(work), "-i", "vm-web01_monitor_10000@kvm1=7",
                    "-O", str(failed)], check=True, capture_output=True, timeout=60)
    later = time.time() + 600  # well past the backoff
    observed, _ = observe_once(str(failed))
    decisions, _ = decide(build_index(observed), desired, Guard(), later, later)
    assert not any(isinstance(d.action, Cleanup) for d in decisions)

    recovered, _ = schedule(failed)
    assert cibs.locate(recovered, "vm-web01") == ["kvm1"]
    observed, raw = observe_once(str(recovered))
    assert build_index(observed).fail_counts == {("vm-web01", "kvm1"): 1}
    decisions, _ = decide(build_index(observed), desired, Guard(), later, later)
    cleanups = [d.action for d in decisions if isinstance(d.action, Cleanup)]
    assert [(c.rsc, c.node) for c in cleanups] == [("vm-web01", "kvm1")]
    # A reset-only cleanup: the fail-count goes, the failed action stays listed (crm_mon).
    reset = tmp_path / "reset.xml"
    reset.write_bytes(recovered.read_bytes())
    (o,) = PacemakerActuator(str(reset)).apply(
        [msgspec.structs.replace(cleanups[0], reset_only=True)], cib=raw)
    assert o.applied
    observed, _ = observe_once(str(reset))
    assert build_index(observed).fail_counts == {}
    assert [f.resource for f in observed.status.failures] == ["vm-web01"]
    outcomes = PacemakerActuator(str(recovered)).apply(cleanups, cib=raw)
    assert all(o.applied for o in outcomes)
    observed, _ = observe_once(str(recovered))
    assert build_index(observed).fail_counts == {}
    assert observed.status.failures == ()
    # Within the backoff window right after the failure, nothing is cleaned.
    observed, _ = observe_once(str(schedule(failed)[0]))
    decisions, _ = decide(build_index(observed), desired, Guard(), time.time(),
                          time.time())
    assert not any(isinstance(d.action, Cleanup) for d in decisions)


def test_circuit_breaker_opens_after_repeated_cleanups(tmp_path: Path) -> None:
    desired = parse_desired("version: 1\nvms:\n  - name: web01\n")
    work = simulate(tmp_path / "c.xml", cib(vm("vm-web01")),
                    inject=("vm-web01_monitor_10000@kvm1=7",))
    node = cibs.locate(work, "vm-web01")[0]
    observed, _ = observe_once(str(work))
    later = time.time() + 3000
    history = CleanupHistory()
    for k in range(5):
        history = history.record("vm-web01", "kvm1", later - 2000 + k * 300)
    guard = Guard(Ledger(cleanups=history))
    decisions, findings = decide(build_index(observed), desired, guard, later, later)
    assert node == "kvm1"
    assert not any(isinstance(d.action, Cleanup) for d in decisions)
    assert [f.severity for f in findings if f.message.startswith("circuit open")] == ["critical"]


def test_only_owned_or_leftover_constraints_are_ever_removed(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    observed, _ = observe_once(str(work))
    empty = parse_desired("version: 1\npolicy: {clear_move_leftovers: false}\n")
    decisions, _ = decide(build_index(observed), empty, Guard(), time.time(),
                          None)
    assert not [d for d in decisions if isinstance(d.action, RemoveConstraint)]


def test_status_churn_between_reading_and_patching_is_not_a_conflict(tmp_path: Path) -> None:
    """num_updates moves with every operation result; only configuration changes conflict."""
    work, raw, actions = planned_on_a_seed_copy(tmp_path)
    # A transient node attribute: a status update, as the cluster makes all the time.
    cibs.tool(["crm_attribute", "--node", "kvm1", "--name", "probe-seen", "--update", "1",
               "--lifetime", "reboot"], work)
    outcomes = PacemakerActuator(str(work)).apply(actions, cib=raw)
    assert outcomes and all(o.applied for o in outcomes)
    assert "warden-prefer-vm-web01" in constraints(work)
    assert 'name="probe-seen"' in work.read_text()  # the status update is kept, not overwritten


def test_cib_is_reread_only_when_its_configuration_changed(tmp_path: Path) -> None:
    from probes.pacemaker.read import CibCache

    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    cache = CibCache(str(work))
    first, _ = cache.get()
    cibs.tool(["crm_attribute", "--node", "kvm1", "--name", "probe-seen", "--update", "1",
               "--lifetime", "reboot"], work)  # status only
    assert cache.get()[0] is first and cache.reads == 1
    cibs.tool(["crm_attribute", "--type", "crm_config", "--name", "cluster-recheck-interval",
               "--update", "5min"], work)  # configuration
    again, raw = cache.get()
    assert cache.reads == 2 and again.properties["cluster-recheck-interval"] == "5min"
    assert b"5min" in raw
