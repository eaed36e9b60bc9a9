"""kvm-warden installed from its Debian package on the lab's three nodes, exactly as README.md's
"Install on a real cluster" says (lab.install: apt, corosync's IPC entry, keys with their owner,
the desired file, /etc/default, the alert agent, the units), and run as its units say: the
agents and the controller are started by the lab's stand-in for systemd (lab/unit.py) from
the *installed* unit files -- their ExecStart, User, groups, EnvironmentFile, directories and
sandbox --, so a unit that is wrong fails here as it would on a real node.

Each node has a disk of its own (overlays over the host's /etc, /usr, /opt and /var/lib, ...):
nothing is installed on the host itself. Not here: systemd as PID 1 (the stand-in does not
apply seccomp-based settings, see lab/unit.py) and Pacemaker's `systemd:` resource class."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import lab
from tests.e2e.conftest import converged
from tests.e2e.test_enroll import NAME, RID, qemu_pid, remove_web03, resource, start_guest
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DESIRED = "/etc/kvm-warden/desired/desired.yaml"  # the package's default (/etc/default)
STATE = "/var/lib/kvm-warden"


def layout(web01: str = "kvm1", web02: str = "kvm2", db01: str = "") -> str:
    return lab.E2E_DESIRED.format(web01=web01, web02=web02, nodes="[kvm1, kvm2, kvm3]",
                                  db01=db01, policy="")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from installed_lab(lab.host_release(), tmp_path_factory)


def installed_lab(release: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three nodes of `release`, each with its own disk, kvm-warden installed on them from
    that release's package as the guide says; taken down after (unless KVM_WARDEN_KEEP_LAB)."""
    out = subprocess.run([str(ROOT / "scripts" / "build-deb.sh")], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "RELEASE": release}).stdout
    (deb,) = re.findall(r"build-deb: (\S+\.deb)", out)
    lab.up(installed_os=True, releases=dict.fromkeys(lab.NODES, release))
    try:
        lab.install(Path(deb))  # the export's file first, as the guide says; then ours
        tmp = tmp_path_factory.mktemp("installed")
        write_desired(tmp, layout())
        wait_for("the installed controller converged the lab", converged, 240)
        yield tmp
    finally:
        if not os.environ.get("KVM_WARDEN_KEEP_LAB"):
            lab.down()


def write_desired(tmp: Path, text: str) -> None:
    """As an operator edits it on kvm1 (in place: its owner and mode stay)."""
    (tmp / "desired.yaml").write_text(text)
    lab.on("kvm1", "cp", str(tmp / "desired.yaml"), DESIRED)


def services() -> dict[str, int]:
    """The running kvm-warden processes: agent-kvmN on every node, the controller on kvm1."""
    found = {}
    for node in lab.NODES:
        for kind in ("agent", "controller"):
            for pid in lab.node_pids(node, f"/opt/kvm-warden/bin/kvm-warden {kind}"):
                found[kind if kind == "controller" else f"agent-{node}"] = int(pid)
    return found


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in
                Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def api(method: str, path: str, body: object | None = None, csrf: str | None = None
        ) -> tuple[int, dict[str, Any]]:
    """The controller's HTTPS port, from inside kvm1 (where it listens on 127.0.0.1)."""
    def call() -> tuple[int, dict[str, Any]]:
        ctx = ssl.create_default_context(cafile=str(lab.BASE / "ha" / "cert.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", 9810, context=ctx, timeout=60)
        token = base64.b64encode(f"{lab.HA_USER}:{lab.HA_PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json",
                   "Origin": "https://127.0.0.1:9810"}
        if csrf:
            headers["X-CSRF-Token"] = csrf
        try:
            conn.request(method, path, json.dumps(body).encode() if body is not None else None,
                         headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()
    return lab.in_netns("kvm1", call)


def audit(node: str = "kvm1") -> list[dict[str, Any]]:
    text = lab.on(node, "cat", f"{STATE}/audit.jsonl", check=False).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_service_runs_from_the_package_as_its_unit_says(packaged: Path) -> None:
    running = services()
    assert set(running) == {"controller", *(f"agent-{n}" for n in lab.NODES)}, running
    for name, pid in running.items():
        node = "kvm1" if name == "controller" else name.removeprefix("agent-")
        uid = lab.on(node, "id", "-u", "kvm-warden").stdout.strip()
        want = {lab.on(node, "getent", "group", g).stdout.split(":")[2]
                for g in ("kvm-warden", "haclient", *(["libvirt"] if name != "controller"
                                                      else []))}
        st = proc_status(pid)
        assert st["Uid"].split() == [uid] * 4, (name, st["Uid"])
        assert set(st["Groups"].split()) == want, (name, st["Groups"])
        assert st["NoNewPrivs"].strip() == "1" and int(st["CapBnd"], 16) == 0, name
        # The unit's sandbox, seen from inside the service's own mount namespace:
        def writable(path: str, pid: int = pid) -> bool:
            return subprocess.run(["nsenter", "-t", str(pid), "-m", "test", "-w", path]
                                  ).returncode == 0
        assert not writable("/etc") and not writable("/usr") and not writable("/etc/kvm-warden")
        assert writable("/run/kvm-warden") and writable("/tmp")
        if name == "controller":
            assert writable(STATE) and writable(str(Path(DESIRED).parent))
    owner = lab.on("kvm1", "stat", "-c", "%U %a", f"{STATE}/writer.lock").stdout.split()
    assert owner[0] == "kvm-warden"
    # What every agent publishes, as its own user: quorum through corosync's IPC (the
    # package's uidgid.d entry) and the domains through libvirt's socket (group libvirt).
    for node in lab.NODES:
        out = lab.on("kvm1", "timeout", "20", "kvm-warden", "watch", "--agent",
                     f"{node}=tcp://{lab.node_ip(node)}:{lab.AGENT_PORT}", "--keys",
                     "/etc/kvm-warden/keys/controller.key_secret", "--allow",
                     "/etc/kvm-warden/allow", "--count", "1", timeout=40).stdout
        snap = {p["type"]: p for p in json.loads(out.splitlines()[0])["payload"]["payloads"]}
        assert snap["QuorumChanged"]["state"] == "ok" and snap["QuorumChanged"]["quorate"], node
        assert sorted(snap["QuorumChanged"]["members"]) == list(lab.NODES)
        assert snap["DomainSeen"]["connected"] is True, node


def test_a_desired_edit_is_carried_out_by_the_installed_controller(packaged: Path) -> None:
    wait_for("converged", converged, 180)
    before = len(audit())
    write_desired(packaged, layout(web02="kvm3"))
    try:
        wait_for("web02 on kvm3", lambda: lab.vms_running().get("vm-web02") == ["kvm3"], 120)
        applied = [r for r in audit()[before:] if r.get("outcome") == "applied"]
        assert any(r.get("resource") == "vm-web02" for r in applied), applied
        assert lab.on("kvm1", "stat", "-c", "%U", f"{STATE}/audit.jsonl").stdout.strip() \
            == "kvm-warden"
    finally:
        write_desired(packaged, layout())
        wait_for("converged again", converged, 180)


def test_a_reviewed_edit_from_the_web_view_writes_where_the_unit_lets_it(packaged: Path
                                                                          ) -> None:
    """The web view's buttons are edits of the desired file: the installed controller must be
    able to write it (its directory, and the unit's ReadWritePaths), as the user it runs as."""
    wait_for("converged", converged, 180)
    code, session = api("GET", "/api/session")
    assert code == 200, session
    edit = {"edit": {"type": "place", "vm": "web02", "node": "kvm3"}}
    try:
        def reviewed() -> dict[str, Any] | None:
            code, review = api("POST", "/api/edits/review", edit, session["csrf"])
            assert code == 200, review
            ok = [a["verdict"] for a in review["actions"]] == ["admitted"]
            return review if ok else None  # a cooldown of the last test's change: again
        review = wait_for("an admitted review", reviewed, 60)
        code, done = api("POST", "/api/edits/confirm", {
            "review_id": review["review_id"]},
            session["csrf"])
        assert code == 200 and done["written"] is True, done
        text = lab.on("kvm1", "cat", DESIRED).stdout
        assert "placement: {prefer: kvm3}" in text
        assert lab.on("kvm1", "stat", "-c", "%U", DESIRED).stdout.strip() == "kvm-warden"
        wait_for("web02 on kvm3", lambda: lab.vms_running().get("vm-web02") == ["kvm3"], 120)
    finally:
        write_desired(packaged, layout())
        wait_for("converged again", converged, 180)


def test_pacemaker_alerts_reach_the_agent_through_the_packaged_alert_agent(packaged: Path
                                                                            ) -> None:
    """Pacemaker runs /usr/lib/kvm-warden/kvm-warden-alert as hacluster; it hands the alert
    to the agent's socket (the agent runs as kvm-warden, the socket is haclient's)."""
    wait_for("converged", converged, 180)
    out = packaged / "watch.out"
    # A refresh makes Pacemaker probe web02 again on kvm2 (where it runs): a resource alert
    # there, and nothing for kvm-warden to undo.
    script = (f"kvm-warden watch --agent kvm2=tcp://{lab.node_ip('kvm2')}:{lab.AGENT_PORT} "
              "--keys /etc/kvm-warden/keys/controller.key_secret --allow /etc/kvm-warden/allow "
              f"> {out} & W=$!; sleep 3; "
              "crm_resource --refresh --resource vm-web02 --node kvm2; sleep 8; kill $W")
    lab.on("kvm1", "sh", "-c", script, timeout=60)
    alerts = [json.loads(line)["payload"] for line in out.read_text().splitlines()
              if '"AlertReceived"' in line]
    assert any(a["kind"] == "resource" and a["resource"] == "vm-web02" and a["node"] == "kvm2"
               for a in alerts), out.read_text()[-2000:]


def test_a_node_that_boots_again_runs_its_agent_from_its_own_disk(packaged: Path) -> None:
    """The package stays installed across a reboot (the node's disk is its own), and the
    node starts its agent from the installed unit as it boots, as an enabled unit would."""
    wait_for("converged", converged, 180)
    before = services()["agent-kvm3"]
    lab.restart_node("kvm3")  # every process killed at once, then booted
    wait_for("kvm3 online again", lambda: "kvm3" in lab.nodes_online(), 180)
    pid = wait_for("kvm3's agent", lambda: services().get("agent-kvm3"), 60)
    assert pid != before
    assert proc_status(pid)["Uid"].split()[0] == lab.on("kvm3", "id", "-u", "kvm-warden"
                                                        ).stdout.strip()
    status = lab.on("kvm3", "dpkg-query", "-W", "-f=${Status}", "kvm-warden").stdout
    assert status == "install ok installed"
    wait_for("converged again", converged, 240)


def test_a_running_vm_is_enrolled_and_its_xml_written_by_the_sandboxed_agent(packaged: Path
                                                                              ) -> None:
    """Enrollment's first step is the agent's: it writes the running domain's XML into its
    --config-dir on the shared storage. Installed, the agent runs as kvm-warden in its unit's
    sandbox (ProtectSystem=strict; ReadWritePaths=-/kvm/storage), and the directory is the
    group kvm-warden's, as step 5 of the guide says."""
    wait_for("converged", converged, 180)
    config = f"{lab.INSTALLED_XML}/{NAME}.xml"
    pid = start_guest("kvm2")
    try:
        write_desired(packaged, layout(db01=(
            f"  - name: {NAME}\n    config: {config}\n    migration_transport: tcp\n"
            "    params: {migrate_options: '--unsafe', force_stop: 'true'}\n"
            "    storage: [gfs2_storage]\n    placement: {prefer: kvm2}\n")))
        wait_for(f"{RID} managed by Pacemaker on kvm2", lambda: (resource() or {}).get(
            "managed") == "true" and (resource() or {}).get("nodes") == "kvm2", 180, 0.5)
        assert qemu_pid("kvm2") == pid  # the same process: never restarted
        owner = lab.on("kvm2", "stat", "-c", "%U", config).stdout.strip()
        assert owner == "kvm-warden", owner  # written by the agent, as its unit's user
        assert f"<name>{NAME}</name>" in lab.on("kvm1", "cat", config).stdout
    finally:
        write_desired(packaged, layout())
        remove_web03([lab.BASE / "storage" / "xml" / f"{NAME}.xml"], stop_first=True,
                     refresh_timeout=180)
