"""Never make the cluster less safe: storage safety on evidence only, operator bans respected.

Each scenario plans and applies with `kvm-warden plan --apply` on a CIB file and lets the real
scheduler (`crm_simulate`) judge the result.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from tests import cibs
from tests.cibs import STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"
STORAGE = """storage:
  - name: gfs2_storage
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
    requires: [clvmd-clone, dlm-clone]
"""


def plan(desired: Path, cib_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "plan", "--desired", str(desired), "--cib",
         str(cib_file), *extra], capture_output=True, text=True, timeout=120)


def constraint_ids(cib_file: Path) -> set[str]:
    xml = cibs.tool(["cibadmin", "--query", "--scope", "constraints"], cib_file)
    return {str(el.get("id")) for el in etree.fromstring(xml.encode())}


def settle(cib_file: Path) -> Path:
    out = cib_file.with_suffix(".settled.xml")
    subprocess.run(["crm_simulate", "-x", str(cib_file), "-S", "-O", str(out)],
                   capture_output=True, text=True, timeout=120, check=True)
    return out


DB01 = {"warden-order-gfs2_res01-clone-vm-db01", "warden-colo-vm-db01-gfs2_res01-clone"}


def test_a_vm_deleted_from_the_file_keeps_its_storage_order_and_colocation(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    assert plan(EXAMPLE, work, "--apply").returncode == 0
    assert constraint_ids(work) >= DB01
    without_db01 = tmp_path / "desired.yaml"
    text = EXAMPLE.read_text()
    cut = text.index("  - name: db01")
    without_db01.write_text(text[:cut] + text[text.index("\npolicy:") + 1:])
    again = plan(without_db01, work, "--apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "remove constraint warden-order-gfs2_res01-clone-vm-db01" not in again.stdout
    assert constraint_ids(settle(work)) >= DB01
    # The scheduler keeps db01 where it was, behind the storage chain.
    assert cibs.locate(settle(work), "vm-db01") != []


def test_an_unlisted_virtualdomain_whose_config_is_on_gfs2_gets_the_dependency(
        tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    only_storage = tmp_path / "desired.yaml"
    only_storage.write_text("version: 1\n" + STORAGE)  # no `vms:` at all
    out = plan(only_storage, work, "--apply")
    assert out.returncode == 0, out.stdout + out.stderr
    assert constraint_ids(work) >= DB01
    assert "its domain XML /kvm/storage/xml/db01.xml is under /kvm/storage" in out.stdout


def test_a_stopped_vm_with_only_disk_derived_evidence_keeps_its_dependency(tmp_path: Path) -> None:
    # app01's config is not under the mountpoint: its dependency came from a listing of its
    # disks while it ran. Stopped (VirtualDomain's domains are transient), nothing lists it now.
    owned = ('<rsc_order id="warden-order-gfs2_res01-clone-vm-app01" first="gfs2_res01-clone" '
             'then="vm-app01" kind="Mandatory"/>'
             '<rsc_colocation id="warden-colo-vm-app01-gfs2_res01-clone" rsc="vm-app01" '
             'with-rsc="gfs2_res01-clone" score="INFINITY"/>')
    work = simulate(tmp_path / "c.xml", cib(
        STORAGE_CHAIN + vm("vm-app01", config="/etc/libvirt/qemu/app01.xml",
                           meta={"target-role": "Stopped"}),
        STORAGE_CONSTRAINTS + owned))
    desired = tmp_path / "desired.yaml"
    desired.write_text("version: 1\n" + STORAGE)
    out = plan(desired, work, "--apply")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "remove constraint" not in out.stdout
    assert "kept warden-order-gfs2_res01-clone-vm-app01" in out.stdout
    assert {"warden-order-gfs2_res01-clone-vm-app01",
            "warden-colo-vm-app01-gfs2_res01-clone"} <= constraint_ids(settle(work))


def test_an_operator_ban_survives_every_pass_and_is_reported(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    desired = tmp_path / "desired.yaml"
    # The seed holds `pcs resource ban vm-web02 kvm3`; the file prefers kvm3 for web02.
    desired.write_text(EXAMPLE.read_text().replace(
        "  - name: web02\n    state: running\n    placement:\n      prefer: kvm1\n",
        "  - name: web02\n    state: running\n    placement:\n      prefer: kvm3\n"))
    for _ in range(2):
        out = plan(desired, work, "--apply")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "remove constraint cli-ban" not in out.stdout
        assert "operator ban cli-ban-vm-web02-on-kvm3 contradicts the desired state" in out.stdout
        assert "cli-ban-vm-web02-on-kvm3" in constraint_ids(work)
    # The ban wins over the preference: Pacemaker keeps web02 off kvm3.
    assert cibs.locate(settle(work), "vm-web02") != ["kvm3"]


VMS4 = ("vm-a", "vm-b", "vm-c", "vm-d")


def drain_cluster(tmp_path: Path, extra_constraints: str = "") -> Path:
    """Four VMs, all preferring kvm3 (a location score of 100), settled by the scheduler."""
    prefer = "".join(f'<rsc_location id="loc-{v}" rsc="{v}" node="kvm3" score="100"/>'
                     for v in VMS4)
    return simulate(tmp_path / "drain.xml", cib(STORAGE_CHAIN + "".join(vm(v) for v in VMS4),
                                                STORAGE_CONSTRAINTS + prefer + extra_constraints))


def drain_file(tmp_path: Path, state: str, vms: str = "") -> Path:
    desired = tmp_path / f"desired-{state}.yaml"
    desired.write_text(f"version: 1\ncluster:\n  nodes: [kvm1, kvm2, {{name: kvm3, state: {state}}}]\n"
                       + STORAGE + vms + "policy: {max_concurrent_migrations: 2}\n")
    return desired


def status(tmp_path: Path, cib_file: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "status", "--cib", str(cib_file),
         "--desired", str(drain_file(tmp_path, "standby"))],
        capture_output=True, text=True, timeout=60, check=True).stdout


def transition(cib_file: Path) -> tuple[Path, str]:
    out = cib_file.with_suffix(".next.xml")
    res = subprocess.run(["crm_simulate", "-x", str(cib_file), "-S", "-O", str(out)],
                         capture_output=True, text=True, timeout=120, check=True)
    return out, res.stdout


def test_a_declared_drain_live_migrates_every_vm_off_and_back_online_they_return(
        tmp_path: Path) -> None:
    work = drain_cluster(tmp_path)
    assert all(cibs.locate(work, v) == ["kvm3"] for v in VMS4)
    out = plan(drain_file(tmp_path, "standby"), work, "--apply")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "node kvm3: standby=on" in out.stdout and "property migration-limit=2" in out.stdout
    assert "node kvm3: standby, draining, 4 VM(s) left: vm-a, vm-b, vm-c, vm-d" in status(
        tmp_path, work)
    settled, summary = transition(work)
    assert "node kvm3: standby, drained" in status(tmp_path, settled)
    for v in VMS4:  # live migrations (migrate_to/migrate_from), never a cold stop/start
        assert f"Migrate    {v}" in summary, summary
        assert f"{v}        start on" not in summary
        assert cibs.locate(settled, v) != ["kvm3"]
    shutil.copy(settled, work)
    back = plan(drain_file(tmp_path, "online"), work, "--apply")
    assert back.returncode == 0 and "node kvm3: standby=off" in back.stdout
    settled, _ = transition(work)
    assert all(cibs.locate(settled, v) == ["kvm3"] for v in VMS4)


def test_a_drain_no_node_can_absorb_is_a_finding_and_nothing_moves(tmp_path: Path) -> None:
    work = drain_cluster(tmp_path)
    only_kvm3 = "vms:\n  - name: a\n    placement: {allowed: [kvm3]}\n"
    out = plan(drain_file(tmp_path, "standby", only_kvm3), work, "--apply")
    assert "drain of kvm3 not started: no node may take vm-a" in out.stdout
    assert "standby=on" not in out.stdout
    settled, _ = transition(work)
    assert all(cibs.locate(settled, v) == ["kvm3"] for v in VMS4)
