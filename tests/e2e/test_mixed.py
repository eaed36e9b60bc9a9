"""A mixed-version cluster on the lab (issue "Current Debian"): kvm1 and kvm2 on this machine's
Debian release, kvm3 on the other one -- the same node with that release's /usr and /etc
(Pacemaker 3.0, corosync 3.1, libvirt 11 and QEMU 10 on Debian 13; LAB.md section 6) -- and
kvm-warden's agent on kvm3 running from that release's package (a venv of this machine's
python3 cannot run there). A lab of its own: it runs after the session's lab is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from lab import lab
from tests.e2e.conftest import Lab, findings, own_lab
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PYTHON = {"12": "Python 3.11", "13": "Python 3.13"}
PACEMAKER = {"12": "Pacemaker 2.1", "13": "Pacemaker 3.0"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str]]:
    other = "13" if lab.host_release() == "12" else "12"
    for env in own_lab({"kvm3": other}, tmp_path_factory.mktemp("mixed") / "desired.yaml"):
        yield env, other


def crm_mon() -> etree._Element:
    return etree.fromstring(lab.on("kvm1", "crm_mon", "-1", "--output-as=xml").stdout.encode())


def operations(rid: str, node: str) -> list[str]:
    out = lab.on("kvm1", "cibadmin", "--query", "--scope", "status").stdout
    root = etree.fromstring(out.encode())
    return sorted({str(op.get("operation")) for ns in root.iter("node_state")
                   if ns.get("uname") == node for res in ns.iter("lrm_resource")
                   if res.get("id") == rid for op in res.iter("lrm_rsc_op")})


def test_a_node_of_the_other_release_joins_and_runs_kvm_warden_from_its_package(
        mixed: tuple[Lab, str]) -> None:
    _, other = mixed
    root = crm_mon()
    dc = root.find(".//current_dc")
    assert dc is not None and dc.get("mixed_version") == "true", etree.tostring(dc)
    assert lab.on("kvm3", "cat", "/etc/debian_version").stdout.startswith(f"{other}.")
    assert PACEMAKER[other] in lab.on("kvm3", "pacemakerd", "--version").stdout
    version = lab.on("kvm3", "/opt/kvm-warden/bin/kvm-warden", "--version").stdout
    assert f"(Debian {other}, {PYTHON[other]}." in version, version
    assert lab.node_pids("kvm3", "/opt/kvm-warden/bin/kvm-warden agent")
    # The controller (on kvm1, this machine's release) hears kvm3's agent: what runs there.
    def kvm3_info() -> str:
        return next((line for line in lab.warden_get("/metrics").splitlines()
                     if line.startswith("kvm_warden_node_info") and 'node="kvm3"' in line
                     and f'os="Debian {other}.' in line), "")

    wait_for("kvm3's versions at the controller", kvm3_info, 90)
    qemu = {"12": 'qemu="7.', "13": 'qemu="10.'}[other]
    assert qemu in kvm3_info() and ('feature_set="3.20' in kvm3_info() or other == "12")
    wait_for("the mixed-version finding", lambda: any(
        "mixed Pacemaker versions" in m and "CIB schema" in m
        for m in findings("mixed Pacemaker versions")), 60)


def test_a_vm_live_migrates_to_the_other_release_and_back_through_the_file(
        mixed: tuple[Lab, str]) -> None:
    """web02 started on kvm2 (this release's machine type): to kvm3 and back, live both ways."""
    env, _ = mixed
    wait_for("web02 on kvm2", lambda: lab.vms_running().get("vm-web02") == ["kvm2"], 120)
    env.write_desired(web02="kvm3")
    wait_for("web02 on kvm3", lambda: lab.vms_running().get("vm-web02") == ["kvm3"]
             and lab.vm_roles().get("vm-web02") == "Started", 180)
    assert "migrate_to" in operations("vm-web02", "kvm2")
    assert "migrate_from" in operations("vm-web02", "kvm3")
    assert "start" not in operations("vm-web02", "kvm3")
    env.write_desired()
    wait_for("web02 back on kvm2", lambda: lab.vms_running().get("vm-web02") == ["kvm2"]
             and lab.vm_roles().get("vm-web02") == "Started", 180)
    assert "migrate_from" in operations("vm-web02", "kvm2")
    assert "migrate_to" in operations("vm-web02", "kvm3")
    assert Path(lab.BASE / "releases.json").exists()


def test_a_vm_started_on_the_newer_release_is_never_sent_to_an_older_one(
        mixed: tuple[Lab, str]) -> None:
    """The trap of a rolling upgrade (LAB.md section 6): a VM that starts on a Debian 13 node
    runs pc-i440fx-10.0, which Debian 12's QEMU lacks. kvm-warden says so (a machine-type
    finding with the fix), and a drain of kvm3 -- Pacemaker would live-migrate it to a Debian
    12 node, fail and restart it -- is held: it keeps running, the same process, on kvm3."""
    env, other = mixed
    if other == "12":  # this machine runs 13: its guests (pc-i440fx-10.0) may not go to kvm3
        web02 = lab.node_pids("kvm2", "guest=web02")
        env.write_desired(web02="kvm3")
        wait_for("web02's move to kvm3 held for its machine type", lambda: any(
            r.get("verdict") == "machine-type" and "pc-i440fx-10.0" in str(r.get("detail"))
            for r in lab.audit_records()), 90)
        assert lab.vms_running().get("vm-web02") == ["kvm2"]
        assert lab.node_pids("kvm2", "guest=web02") == web02  # never restarted
        env.write_desired()
        return
    env.write_desired(db01="    state: stopped\n")
    wait_for("db01 stopped", lambda: "vm-db01" not in lab.vms_running(), 120)
    env.write_desired(db01="    placement: {prefer: kvm3}\n")
    wait_for("db01 started on kvm3", lambda: lab.vms_running().get("vm-db01") == ["kvm3"]
             and lab.vm_roles().get("vm-db01") == "Started", 180)
    machine = lab.on("kvm3", "virsh", "-c", "qemu:///system", "dumpxml", "db01").stdout
    assert "machine='pc-i440fx-10.0'" in machine, machine[:400]
    wait_for("the machine-type finding", lambda: any(
        "vm-db01 runs machine type pc-i440fx-10.0 on kvm3" in m and "kvm1, kvm2" in m
        for m in findings("machine type")), 90)
    pid = lab.node_pids("kvm3", "guest=db01")
    env.write_desired(db01="    placement: {prefer: kvm3}\n",
                      nodes="[kvm1, kvm2, {name: kvm3, state: standby}]")
    wait_for("the drain held for db01's machine type", lambda: any(
        r.get("verdict") == "machine-type" and "pc-i440fx-10.0" in str(r.get("detail"))
        and "kvm3" in str(r.get("action")) for r in lab.audit_records()), 90)
    assert lab.vms_running().get("vm-db01") == ["kvm3"]
    assert lab.node_pids("kvm3", "guest=db01") == pid  # never restarted
    node = next(n for n in crm_mon().iter("node") if n.get("name") == "kvm3")
    assert node.get("standby") == "false"
