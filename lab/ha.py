"""The controller as a cluster resource (config/pacemaker/controller-ha.pcs): its user on
every node, its start and stop, where it runs, and asking its HTTPS port."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lab.base import (
    _HA_USER_MADE,
    AGENT_PORT,
    BASE,
    HA_LOG,
    HA_PASSWORD,
    HA_PORT,
    HA_RUN_AS,
    HA_SHARED,
    HA_USER,
    HA_VIP,
    NODE_PYTHON,
    NODES,
    ROOT,
    STORAGE,
    foreign,
    node_ip,
    on,
    packaged,
    sh,
)
from lab.warden import _ha_web_config, _keys, kvm_warden_argv


def _ha_user_line() -> str:
    """A node of the other release has its own /etc: the HA controller's user made there at
    boot (this host's uid and gid, in its haclient) before Pacemaker may start the controller."""
    import pwd
    import shlex

    try:
        me = pwd.getpwnam(HA_RUN_AS)
    except KeyError:
        return ""
    user = shlex.quote(HA_RUN_AS)
    return (f"getent passwd {user} >/dev/null || {{ groupadd --gid {me.pw_gid} {user} || true; "
            f"useradd --system --no-create-home --uid {me.pw_uid} --gid {me.pw_gid} "
            f"--groups haclient --shell /bin/sh {user}; }}\n")


def _ha_user() -> None:
    """The controller's user as the README makes it, if this host has none yet."""
    import pwd

    try:
        pwd.getpwnam(HA_RUN_AS)
    except KeyError:
        sh("useradd", "--system", "--no-create-home", "--user-group", "--groups", "haclient",
           "--shell", "/bin/sh", HA_RUN_AS)
        _HA_USER_MADE.touch()


def _ha_user_on_foreign_nodes() -> None:
    """A node of the other release has its own /etc: the controller's user there too, with
    this host's uid and gid (the files on the shared storage are theirs) and in its haclient."""
    import pwd

    me = pwd.getpwnam(HA_RUN_AS)
    for node in NODES:
        if not foreign(node) or on(node, "getent", "passwd", HA_RUN_AS, check=False).stdout:
            continue
        on(node, "groupadd", "--gid", str(me.pw_gid), HA_RUN_AS, check=False)
        on(node, "useradd", "--system", "--no-create-home", "--uid", str(me.pw_uid), "--gid",
           str(me.pw_gid), "--groups", "haclient", "--shell", "/bin/sh", HA_RUN_AS)


def _remove_ha_user() -> None:
    if _HA_USER_MADE.exists():
        sh("userdel", HA_RUN_AS, check=False)
        _HA_USER_MADE.unlink()


def _give_to_ha_user(*paths: Path, mode: int) -> None:
    for path in paths:
        shutil.chown(path, HA_RUN_AS, HA_RUN_AS)
        path.chmod(mode)


def ha_commands() -> list[list[str]]:
    """config/pacemaker/controller-ha.pcs with the lab's values: the lines an operator runs."""
    import shlex
    from string import Template

    values = {
        "VIP": HA_VIP, "CIDR": "24", "NIC": "eth0",
        "BIN": kvm_warden_argv("kvm1")[0] if foreign("kvm1") or packaged()
        else str(Path(sys.executable).parent / "kvm-warden"),
        "SHARED": f"{STORAGE}/kvm-warden", "STORAGE": "gfs2_res01-clone",
        "KEYS": str(BASE / "keys" / "controller.key_secret"),
        "ALLOW": str(BASE / "allow-controller"), "WEB": str(BASE / "ha" / "web.yml"),
        "AGENTS": " ".join(f"--agent {n}=tcp://{node_ip(n)}:{AGENT_PORT}" for n in NODES),
        "USER": HA_RUN_AS, "RUN": "/run/kvm-warden-controller", "LOG": str(HA_LOG),
    }
    text = (ROOT / "config" / "pacemaker" / "controller-ha.pcs").read_text()
    return [shlex.split(Template(line).substitute(values)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def start_ha_controller(desired_text: str, via: str = "kvm1") -> None:
    """The controller as Pacemaker's resource group warden-ctl, its files on the shared storage."""
    _keys()
    _ha_web_config()
    _ha_user()
    _ha_user_on_foreign_nodes()
    for d in (HA_SHARED, HA_LOG):
        d.mkdir(parents=True, exist_ok=True)
    (HA_SHARED / "desired.yaml").write_text(desired_text)
    _give_to_ha_user(HA_SHARED, HA_LOG, mode=0o750)
    _give_to_ha_user(*(f for f in HA_SHARED.iterdir() if f.is_file()), mode=0o640)
    _give_to_ha_user(BASE / "keys" / "controller.key_secret", BASE / "ha" / "key.pem",
                     BASE / "ha" / "web.yml", mode=0o600)
    for argv in ha_commands():
        on(via, *argv)


def stop_ha_controller(via: str = "kvm1") -> None:
    on(via, "pcs", "resource", "delete", "warden-ctl", "--force", check=False, timeout=120)


def ha_node(via: str = "kvm1") -> str | None:
    """The node Pacemaker runs the controller's process on."""
    from lxml import etree

    out = on(via, "crm_mon", "-1", "--output-as=xml", check=False).stdout
    try:
        root = etree.fromstring(out.encode())
    except etree.XMLSyntaxError:
        return None
    for r in root.iter("resource"):
        if r.get("id") == "ctl-proc" and r.get("active") == "true":
            nodes = [str(n.get("name")) for n in r.iter("node")]
            return nodes[0] if nodes else None
    return None


def ha_get(path: str, via: str, auth: bool = True) -> tuple[int, str]:
    """GET https://VIP:9810/PATH from inside a node (the lab network), as Prometheus would."""
    code = (
        "import base64, ssl, sys, urllib.request, urllib.error\n"
        f"req = urllib.request.Request('https://{HA_VIP}:{HA_PORT}{path}')\n"
        + (f"req.add_header('Authorization', 'Basic ' + base64.b64encode("
           f"b'{HA_USER}:{HA_PASSWORD}').decode())\n" if auth else "")
        + f"ctx = ssl.create_default_context(cafile='{BASE / 'ha' / 'cert.pem'}')\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=5, context=ctx)\n"
        "    sys.stdout.write(str(r.status) + '\\n' + r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    sys.stdout.write(str(e.code) + '\\n')\n"
        "except OSError as e:\n"
        "    sys.stdout.write('0\\n' + str(e))\n")
    out = on(via, NODE_PYTHON, "-c", code, check=False, timeout=30).stdout
    head, _, body = out.partition("\n")
    return (int(head) if head.isdigit() else 0), body
