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
