"""kvm-warden on the lab: an agent on every node and the controller on kvm1, from this tree
or from a release's package; its keys, its web configuration, its alert agent, and reading
what it says (/status, the audit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab.base import (
    AGENT_PORT,
    ALERT_SOCKET,
    BASE,
    HA_PASSWORD,
    HA_USER,
    HA_VIP,
    NODE_PYTHON,
    NODES,
    ROOT,
    STORAGE,
    UNIT_RUNNER,
    WARDEN_MARKER,
    _detach,
    foreign,
    installed,
    node_ip,
    node_pid,
    on,
    packaged,
    sh,
)


def kvm_warden_argv(node: str) -> list[str]:
    """How kvm-warden runs on the node: this tree with this interpreter, or on a node of
    another release its package (a venv of this machine's python3 cannot run there)."""
    if foreign(node) or packaged():
        return ["/opt/kvm-warden/bin/kvm-warden"]
    return [sys.executable, "-m", "controller.app.cli"]


def _agent_line(node: str) -> str:
    """The node's kvm-warden agent, started at boot like its systemd unit would be."""
    import shlex

    argv = " ".join(shlex.quote(a) for a in _agent_argv(node))
    if installed():  # as systemd would start the enabled unit
        argv = f"/usr/bin/python3 {UNIT_RUNNER} start kvm-warden-agent"
    return f"(cd {shlex.quote(str(ROOT))} && exec {argv}) >> {BASE / f'agent-{node}.log'} 2>&1 &\n"


def _keys() -> None:
    from controller.bus.keys import generate_keys

    keys, allow_agents, allow_ctl = BASE / "keys", BASE / "allow-agents", BASE / "allow-controller"
    for d in (keys, allow_agents, allow_ctl):
        d.mkdir(parents=True, exist_ok=True)
    for name in (*NODES, "controller"):
        secret = keys / f"{name}.key_secret"
        if not secret.exists():
            generate_keys(keys, name)
        secret.chmod(0o600)  # a lab made by an older version left them readable
    shutil.copy(keys / "controller.key", allow_agents / "controller.key")
    for node in NODES:
        shutil.copy(keys / f"{node}.key", allow_ctl / f"{node}.key")


def _spawn(node: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    pid = node_pid(node)
    # Temporary files in the lab's own directory: a process the nemesis kills with SIGKILL
    # (in the middle of a preview, say) cannot remove its own, and down() removes these.
    tmp = BASE / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)  # the HA controller's own user writes there too
    return _detach(["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt",
                    f"--uts=/proc/{pid}/ns/uts", *argv], BASE / f"{name}.log", cwd=ROOT,
                   env={**os.environ, "TMPDIR": str(tmp)})


def _agent_argv(node: str) -> list[str]:
    keys = BASE / "keys"
    return [*kvm_warden_argv(node), "agent", "--node", node,
            "--bind", f"tcp://{node_ip(node)}:{AGENT_PORT}", "--libvirt-uri", "qemu:///system",
            "--keys", str(keys / f"{node}.key_secret"), "--allow", str(BASE / "allow-agents"),
            "--alerts", ALERT_SOCKET, "--config-dir", str(STORAGE)]


def start_agent(node: str) -> subprocess.Popen[bytes]:
    if installed():
        return start_unit(node, "kvm-warden-agent", f"agent-{node}")
    return _spawn(node, f"agent-{node}", _agent_argv(node))


def start_unit(node: str, unit: str, log: str) -> subprocess.Popen[bytes]:
    """An installed unit started as its unit file says (lab/unit.py, the stand-in for systemd),
    with the node's own python3: the settings are read from the node's installed files."""
    return _spawn(node, log, ["/usr/bin/python3", str(UNIT_RUNNER), "start", unit])


def start_controller(desired: Path, http_port: int = 9810, state_dir: Path | None = None
                     ) -> subprocess.Popen[bytes]:
    if installed():  # its desired file, state and port are /etc/default/kvm-warden's
        return start_unit("kvm1", "kvm-warden-controller", "controller")
    keys = BASE / "keys"
    agents = [a for n in NODES for a in ("--agent", f"{n}=tcp://{node_ip(n)}:{AGENT_PORT}")]
    # nsenter --mount starts the command in the node's root: every path must be absolute.
    return _spawn("kvm1", "controller", [
        *kvm_warden_argv("kvm1"), "controller", "--desired",
        str(desired.resolve()),
        "--keys", str(keys / "controller.key_secret"), "--allow", str(BASE / "allow-controller"),
        "--http-host", "127.0.0.1", "--web-config", str(_ha_web_config()),
        "--state-dir", str(state_dir or BASE / "state"),
        "--http-port", str(http_port), *agents])


def start_agents() -> dict[str, subprocess.Popen[bytes]]:
    _keys()
    (BASE / WARDEN_MARKER).touch()  # from now on a node boots with its agent
    return {f"agent-{n}": start_agent(n) for n in NODES}


def start_warden(desired: Path) -> dict[str, subprocess.Popen[bytes]]:
    procs = start_agents()
    procs["controller"] = start_controller(desired)
    return procs


def warden_get(path: str, port: int = 9810) -> str:
    """GET from the controller's HTTP port, which listens inside kvm1's network namespace
    (HTTPS with the lab's user: the lab runs it with a web configuration, as production does)."""
    code = (
        "import base64, ssl, sys, urllib.request\n"
        f"req = urllib.request.Request('https://127.0.0.1:{port}{path}')\n"
        f"req.add_header('Authorization', 'Basic ' + base64.b64encode("
        f"b'{HA_USER}:{HA_PASSWORD}').decode())\n"
        f"ctx = ssl.create_default_context(cafile='{BASE / 'ha' / 'cert.pem'}')\n"
        "sys.stdout.write(urllib.request.urlopen(req, timeout=10, context=ctx).read().decode())\n")
    return on("kvm1", NODE_PYTHON, "-c", code, check=False).stdout


def audit_records(name: str = "controller") -> list[dict[str, object]]:
    out = []
    path = BASE / f"{name}.log"
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def _ha_web_config() -> Path:
    import bcrypt

    d = BASE / "ha"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "cert.pem").exists():
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
           str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "30", "-subj",
           f"/CN={HA_VIP}", "-addext",
           f"subjectAltName=IP:{HA_VIP},IP:127.0.0.1,DNS:localhost")
    hashed = bcrypt.hashpw(HA_PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (d / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {d / 'cert.pem'}\n  key_file: {d / 'key.pem'}\n"
        f"basic_auth_users:\n  {HA_USER}: '{hashed}'\n"
        f"kvm_warden:\n  roles: {{{HA_USER}: operator}}\n")  # the lab's user opens consoles
    return d / "web.yml"


def _alert(path: str) -> None:
    on("kvm1", "pcs", "alert", "create", "id=kvm-warden", f"path={path}")
    on("kvm1", "pcs", "alert", "recipient", "add", "kvm-warden", f"value={ALERT_SOCKET}",
       "id=kvm-warden-agent")
