"""A guest started with virsh, outside the cluster, put under Pacemaker by declaring it in the
desired file -- without a restart -- and taken out again, on the real 3-node lab. Each
scenario starts a fresh guest `web03` and leaves no trace of it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from lab import lab
from tests.e2e.conftest import Lab, audits, converged, findings, status
from tests.waiting import wait_for

NAME, RID, PORT = "web03", "vm-web03", 5904
CONFIG = f"{lab.STORAGE}/{NAME}.xml"  # on the lab's shared storage, as every node sees it


def entry(prefer: str = "kvm2", extra: str = "") -> str:
    """web03 in the desired file (after db01), as the README's enrollment example."""
    return (f"  - name: {NAME}\n    config: {CONFIG}\n    migration_transport: tcp\n"
            "    params: {migrate_options: '--unsafe', force_stop: 'true'}\n"
            "    meta: {resource-stickiness: '100'}\n"
            f"    storage: [gfs2_storage]\n    placement: {{prefer: {prefer}}}\n{extra}")


def virsh(node: str, *argv: str, check: bool = True) -> str:
    return lab.on(node, "virsh", "-c", "qemu:///system", *argv, check=check).stdout


def start_guest(node: str, xml: str | None = None) -> int:
    """web03 started with `virsh create` on `node` from a file that is not on the shared
    storage: its definition lives in that libvirt only. Returns its qemu PID."""
    disk = lab.BASE / "storage" / f"{NAME}.qcow2"
    if not disk.exists():
        lab.sh("qemu-img", "create", "-f", "qcow2", str(disk), "64M")
    src = lab.BASE / node / f"{NAME}-outside.xml"
    src.write_text(xml or lab._guest_xml(NAME, PORT))
    virsh(node, "create", str(src))
    return qemu_pid(node)


def qemu_pid(node: str) -> int:
    pids = lab.node_pids(node, f"guest={NAME}")
    assert len(pids) == 1, f"qemu of {NAME} on {node}: {pids}"
    return int(pids[0])


def cib_configuration() -> bytes:
    out = lab.on("kvm1", "cibadmin", "--query", "--scope", "configuration").stdout
    return etree.tostring(etree.fromstring(out.encode()), method="c14n")


def operations(node: str) -> list[str]:
    """The operations Pacemaker ran on web03 on `node`, from the CIB's status."""
    out = lab.on("kvm1", "cibadmin", "--query", "--scope", "status").stdout
    root = etree.fromstring(out.encode())
    return sorted({f"{op.get('operation')}/{op.get('interval')}" for ns in root.iter("node_state")
                   if ns.get("uname") == node for res in ns.iter("lrm_resource")
                   if res.get("id") == RID for op in res.iter("lrm_rsc_op")})


def resource(via: str = "kvm1") -> dict[str, str] | None:
    out = lab.on(via, "crm_mon", "-1", "--output-as=xml", check=False).stdout
    try:
        root = etree.fromstring(out.encode())
    except etree.XMLSyntaxError:
        return None
    for r in root.iter("resource"):
        if r.get("id") == RID:
            nodes = [str(n.get("name")) for n in r.iter("node")]
            return {"managed": str(r.get("managed")), "role": str(r.get("role")),
                    "nodes": ",".join(nodes), "orphaned": str(r.get("orphaned"))}
    return None


@pytest.fixture
def clean(cluster: Lab) -> Iterator[Lab]:
    wait_for("converged", converged, 240)
    try:
        yield cluster
    finally:
        cluster.write_desired()
        # Stopped through Pacemaker before its resource goes: an orphan's stop has no
        # configuration, fails, and gets its node fenced (every guest there restarted).
        remove_web03([lab.BASE / "storage" / f"{NAME}.xml",
                      lab.BASE / "storage" / f"{NAME}-copy.qcow2"], stop_first=True,
                     refresh_timeout=180)


def remove_web03(files: list[Path], stop_first: bool = False,
                 refresh_timeout: float = 60) -> None:
    """Take web03 out of the lab once the desired file no longer declares it: the resource,
    the guest on every node, its files and disk; then wait for the lab's layout again.
    `stop_first`: stop it while its configuration is there (an orphan's stop has no `config`,
    fails -- VirtualDomain: "not configured" -- and gets its node fenced)."""
    # The file first: while it still declares web03, deleting the resource would have
    # kvm-warden enroll it again, racing the deletion.
    wait_for("a pass without web03 in the file", lambda: not any(
        r.get("vm") == NAME and r.get("desired_state") for r in status().get("vms", ())), 60)
    if stop_first:
        lab.on("kvm1", "pcs", "resource", "disable", RID, "--wait=120", check=False,
               timeout=180)
    lab.on("kvm1", "pcs", "resource", "delete", RID, "--force", check=False, timeout=120)
    lab.on("kvm1", "cibadmin", "--delete", "--xml-text",
           '<cluster_property_set id="warden-keep-orphans"/>', check=False)
    for node in lab.NODES:
        virsh(node, "destroy", NAME, check=False)
        virsh(node, "undefine", NAME, check=False)
    for f in (*files, lab.BASE / "storage" / f"{NAME}.qcow2"):
        f.unlink(missing_ok=True)
    # Pacemaker forgets the deleted resource's history.
    lab.on("kvm1", "crm_resource", "--refresh", "--resource", RID, check=False,
           timeout=refresh_timeout)
    wait_for("converged again", converged, 240)


def enroll(cluster: Lab) -> tuple[int, float]:
    """Start web03 on kvm2 outside the cluster, declare it; wait until Pacemaker manages it.
    Returns its qemu PID and the seconds from the file edit to "managed"."""
    pid = start_guest("kvm2")
    assert resource() is None
    t0 = time.monotonic()
    cluster.write_desired(db01=entry())
    wait_for("web03 managed by Pacemaker on kvm2", lambda: (resource() or {}).get("managed")
             == "true" and (resource() or {}).get("nodes") == "kvm2", 180, 0.2)
    return pid, time.monotonic() - t0


def test_a_vm_started_with_virsh_is_enrolled_without_a_restart_then_migrates_live(
        clean: Lab) -> None:
    pid, seconds = enroll(clean)
    print(f"desired file edited -> {RID} managed: {seconds:.1f} s")
    assert qemu_pid("kvm2") == pid  # the same process: never restarted
    # Pacemaker only ever looked at it on kvm2 (probe, recurring monitor): no start or stop.
    assert operations("kvm2") == ["monitor/0", "monitor/10000"]
    assert all(operations(n) == ["monitor/0"] for n in ("kvm1", "kvm3"))
    # Its XML, written by kvm2's agent from libvirt, is the resource's config on every node.
    xml = (lab.BASE / "storage" / f"{NAME}.xml").read_text()
    assert f"<name>{NAME}</name>" in xml
    constraints = lab.on("kvm1", "cibadmin", "--query", "--scope", "constraints").stdout
    assert f'id="warden-order-gfs2_res01-clone-{RID}"' in constraints
    assert f'id="warden-colo-{RID}-gfs2_res01-clone"' in constraints
    # A live migration through Pacemaker, asked for by the file.
    clean.write_desired(db01=entry(prefer="kvm3"))
    wait_for("web03 on kvm3", lambda: (resource() or {}).get("nodes") == "kvm3"
             and (resource() or {}).get("role") == "Started", 180)
    assert "migrate_to/0" in operations("kvm2") and "migrate_from/0" in operations("kvm3")
    assert qemu_pid("kvm3") > 0
    # The enrollment's location on kvm2 made way for the placement's.
    assert "warden-enroll-" not in lab.on("kvm1", "cibadmin", "--query", "--scope",
                                          "constraints").stdout


def restart_controller(cluster: Lab) -> None:
    """The controller stops and starts again after the agents published (a restart, an HA
    takeover): it learns what they know from their snapshots only."""
    mine = lab.node_pids("kvm1", lab.CONTROLLER)
    assert mine, "the lab's controller runs on kvm1"
    lab.on("kvm1", "kill", *mine)
    wait_for("the controller gone", lambda: not lab.node_pids(
        "kvm1", lab.CONTROLLER), 30)
    lab.start_controller(cluster.desired)
    wait_for("the restarted controller's first pass",
             lambda: '"vms"' in lab.warden_get("/status"), 60)


def exports() -> list[str]:
    return [json.dumps(a) for a in audits() if NAME in json.dumps(a)
            and "ExportConfig" in json.dumps(a)]


def test_the_seeds_procedure_xml_put_on_the_shared_storage_by_hand_is_enrolled_without_restart(
        clean: Lab) -> None:
    """The seed's way: `virsh dumpxml NAME > FILE` on storage every node sees, then declare it;
    the controller started after the agents had published the file."""
    pid = start_guest("kvm2")
    xml = virsh("kvm2", "dumpxml", NAME)
    (lab.BASE / "storage" / f"{NAME}.xml").write_text(xml)
    time.sleep(3)  # the agents' watchers (2 s) publish the new file to the running controller
    restart_controller(clean)
    before = len(exports())
    t0 = time.monotonic()
    clean.write_desired(db01=entry())
    wait_for("web03 managed by Pacemaker on kvm2", lambda: (resource() or {}).get("managed")
             == "true" and (resource() or {}).get("nodes") == "kvm2", 180, 0.2)
    print(f"desired file edited -> {RID} managed: {time.monotonic() - t0:.1f} s")
    assert qemu_pid("kvm2") == pid  # the same process: never restarted
    assert operations("kvm2") == ["monitor/0", "monitor/10000"]  # no start, no stop
    assert all(operations(n) == ["monitor/0"] for n in ("kvm1", "kvm3"))
    # The operator's file is the resource's config, as written; nothing tried to write it.
    assert (lab.BASE / "storage" / f"{NAME}.xml").read_text() == xml
    assert len(exports()) == before
    assert not findings("is not enrolled")


def test_retiring_with_keep_running_leaves_the_same_qemu_running_and_no_resource(
        clean: Lab) -> None:
    pid, _ = enroll(clean)
    clean.write_desired(db01=entry(extra="    state: absent\n    keep_running: true\n"))
    wait_for("no web03 resource any more, not even an orphan", lambda: resource() is None and
             "warden-keep-orphans" not in lab.on("kvm1", "cibadmin", "--query", "--scope",
                                                 "crm_config").stdout, 180)
    assert qemu_pid("kvm2") == pid
    assert virsh("kvm2", "domstate", NAME).strip() == "running"
    assert RID not in lab.on("kvm1", "cibadmin", "--query").stdout


def test_retiring_without_keep_running_stops_it_through_pacemaker(clean: Lab) -> None:
    enroll(clean)
    clean.write_desired(db01=entry(extra="    state: absent\n"))
    wait_for("web03 stopped and its resource gone", lambda: resource() is None, 180)
    assert lab.node_pids("kvm2", f"guest={NAME}") == []
    assert NAME not in virsh("kvm2", "list", "--all")


def _twice() -> None:
    start_guest("kvm2")
    # a second copy on kvm3 (its own disk: qemu locks the first one)
    lab.sh("qemu-img", "create", "-f", "qcow2", str(lab.BASE / "storage" / f"{NAME}-copy.qcow2"),
           "64M")
    start_guest("kvm3", lab._guest_xml(NAME, PORT).replace(f"{NAME}.qcow2", f"{NAME}-copy.qcow2"))


def _autostart() -> None:
    src = lab.BASE / "kvm2" / f"{NAME}-outside.xml"
    lab.sh("qemu-img", "create", "-f", "qcow2", str(lab.BASE / "storage" / f"{NAME}.qcow2"), "64M")
    src.write_text(lab._guest_xml(NAME, PORT))
    virsh("kvm2", "define", str(src))
    virsh("kvm2", "autostart", NAME)
    virsh("kvm2", "start", NAME)


def _name_not_on_its_line() -> None:
    start_guest("kvm2")
    # the file on the shared storage, written by hand with <name> run into <domain>
    one_line = lab._guest_xml(NAME, PORT).replace("\n  <name>", "<name>")
    (lab.BASE / "storage" / f"{NAME}.xml").write_text(one_line)


@pytest.mark.parametrize(("inject", "words"), [
    (_twice, "runs on 2 nodes"),
    (_autostart, "autostarts web03 on kvm2"),
    (_name_not_on_its_line, "not on a line of its own"),
])
def test_each_pitfall_is_refused_and_the_cib_is_untouched(clean: Lab, inject: object,
                                                          words: str) -> None:
    before = cib_configuration()
    inject()  # type: ignore[operator]
    clean.write_desired(db01=entry())
    wait_for(f"the refusal: {words}", lambda: any(words in m for m in findings(
        "is not enrolled, nothing was changed")), 90)
    time.sleep(3)  # more passes, still refused
    assert cib_configuration() == before
    assert resource() is None
    assert not Path(f"{lab.BASE}/storage/{NAME}.xml").exists() or inject is _name_not_on_its_line
