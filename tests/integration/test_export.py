"""Adoption: `export` writes the cluster as it is; `plan` with it changes nothing but missing
safety, and the scheduler moves no VM when that safety is applied."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cibs import STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, nvpairs, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
ROOT = Path(__file__).parent.parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"
SAFETY = {"storage"}  # the only reconciler allowed to propose anything after an export


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.app.cli", *argv],
                          capture_output=True, text=True, timeout=120)


def adopt(work: Path, tmp_path: Path) -> list[dict[str, object]]:
    exported = tmp_path / "exported.yaml"
    assert cli("export", "--cib", str(work), "-o", str(exported)).returncode == 0
    assert cli("validate", str(exported)).returncode == 0
    plan = json.loads(cli("plan", "--desired", str(exported), "--cib", str(work),
                          "--json").stdout)
    for a in plan["actions"]:
        assert a["reconciler"] in SAFETY, a  # no placement, run-state or property change
        assert a["kind"] != "RemoveConstraint", a
        if a["kind"] == "SetProperty":
            assert (a["name"], a["value"]) == ("no-quorum-policy", "freeze")
    assert plan["transition"] == []  # applying the missing safety moves no VM
    applied = cli("plan", "--desired", str(exported), "--cib", str(work), "--apply",
                  "--state-dir", str(tmp_path / "state"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = json.loads(cli("plan", "--desired", str(exported), "--cib", str(work),
                           "--json").stdout)
    assert again["actions"] == []
    return list(plan["actions"])  # type: ignore[arg-type]


def test_the_seed_cluster_is_adopted_with_only_missing_safety(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    actions = adopt(work, tmp_path)
    assert {a["description"] for a in actions} == {  # type: ignore[index]
        "order warden-order-gfs2_res01-clone-vm-db01: gfs2_res01-clone then vm-db01 (Mandatory)",
        "colocation warden-colo-vm-db01-gfs2_res01-clone: vm-db01 with gfs2_res01-clone score "
        "INFINITY",
        "property no-quorum-policy=freeze",
    }


def test_pcs_made_placement_and_stopped_vms_are_adopted_as_they_are(tmp_path: Path) -> None:
    constraints = STORAGE_CONSTRAINTS + (
        '<rsc_location id="location-vm-a-kvm2-50" rsc="vm-a" node="kvm2" score="50"/>'
        '<rsc_location id="allowed-vm-b" rsc="vm-b"><rule id="allowed-vm-b-r" score="-INFINITY" '
        'boolean-op="and"><expression id="allowed-vm-b-e1" attribute="#uname" operation="ne" '
        'value="kvm1"/><expression id="allowed-vm-b-e2" attribute="#uname" operation="ne" '
        'value="kvm3"/></rule></rsc_location>'
        '<rsc_colocation id="colocation-vm-a-vm-b-INFINITY" rsc="vm-a" with-rsc="vm-b" '
        'score="-INFINITY"/>'
        '<rsc_order id="order-gfs-a" first="gfs2_res01-clone" then="vm-a" kind="Mandatory"/>'
        '<rsc_colocation id="colo-gfs-a" rsc="vm-a" with-rsc="gfs2_res01-clone" '
        'score="INFINITY"/>')
    # The Filesystem clone says where it mounts (its `directory`), as a real one does.
    chain = STORAGE_CHAIN.replace(
        '<primitive id="gfs2_res01" class="ocf" provider="heartbeat" type="Filesystem">',
        '<primitive id="gfs2_res01" class="ocf" provider="heartbeat" type="Filesystem">'
        + nvpairs("gfs2_res01", "instance_attributes", {"directory": "/kvm/storage"}))
    work = simulate(tmp_path / "c.xml", cib(
        chain + vm("vm-a") + vm("vm-b") + vm("vm-c", config="/etc/libvirt/c.xml",
                                                     meta={"target-role": "Stopped"}),
        constraints, properties={"no-quorum-policy": "freeze"}))
    exported = adopt(work, tmp_path)
    # Only vm-b's missing storage dependency; vm-a's pcs-made ones are adopted, vm-c is not
    # on the storage (its config lies elsewhere and it is stopped: nothing lists its disks).
    assert {a["description"].split(":")[0] for a in exported} == {  # type: ignore[union-attr]
        "order warden-order-gfs2_res01-clone-vm-b", "colocation warden-colo-vm-b-gfs2_res01-clone"}
    text = cli("export", "--cib", str(work)).stdout
    assert "prefer: \"kvm2\"   # rsc_location location-vm-a-kvm2-50" in text
    assert "allowed: [\"kvm1\", \"kvm3\"]" in text and "state: stopped" in text
    assert "anti_affinity: [\"b\"]" in text


def test_a_move_leftover_and_a_failure_are_reported_not_acted_on_after_adoption(
        tmp_path: Path) -> None:
    # An operator moved vm-a (`pcs resource move`: cli-prefer-vm-a, settled) and vm-b's
    # monitor failed once and Pacemaker recovered it (a fail-count, no failed flag).
    work = simulate(tmp_path / "c.xml", cib(
        STORAGE_CHAIN + vm("vm-a") + vm("vm-b"), STORAGE_CONSTRAINTS
        + '<rsc_location id="a-on-kvm1" rsc="vm-a" node="kvm1" score="100"/>'),
        inject=("vm-b_monitor_10000@kvm2=7",))
    subprocess.run(["crm_resource", "--move", "--resource", "vm-a", "--node", "kvm3"],
                   env={**__import__("os").environ, "CIB_file": str(work)}, check=True,
                   capture_output=True, timeout=60)
    settled = tmp_path / "settled.xml"
    subprocess.run(["crm_simulate", "-x", str(work), "-S", "-O", str(settled)], check=True,
                   capture_output=True, timeout=120)
    shutil.move(settled, work)
    status = json.loads(cli("status", "--cib", str(work), "--json").stdout)
    by_vm = {r["resource"]: r for r in status}
    assert by_vm["vm-b"]["fail_counts"] and by_vm["vm-a"]["nodes"] == ["kvm3"]
    actions = adopt(work, tmp_path)  # only storage safety (asserted inside)
    assert not any(a["kind"] in ("RemoveConstraint", "Cleanup") for a in actions)
    text = cli("export", "--cib", str(work)).stdout
    assert "clear_move_leftovers: false" in text and "clean_failures: false" in text


def test_domains_running_outside_the_cluster_are_listed_as_enrollment_candidates(
        tmp_path: Path) -> None:
    # libvirt's test driver runs one domain, "test", that no Pacemaker resource names.
    work = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + vm("vm-web01"), STORAGE_CONSTRAINTS))
    out = cli("export", "--cib", str(work), "--libvirt", "kvm2=test:///default")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith('#  - name: "test" '))
    assert "running on kvm2 (test:///default), no Pacemaker resource" in lines[head]
    assert lines[head + 1].startswith("#    config: ")
    assert lines[head + 2] == "#    migration_transport: ssh"
    assert not any("name: web01 " in line and line.startswith("#") for line in lines)
    exported = tmp_path / "e.yaml"
    exported.write_text(out.stdout)
    assert cli("validate", str(exported)).returncode == 0
    bad = cli("export", "--cib", str(work), "--libvirt", "kvm2")
    assert bad.returncode != 0 and "expected NODE=URI" in bad.stderr
