"""kvm-warden installed from its Debian package, as README.md's install guide says (steps
2-7), on the nodes of a lab made with up(installed_os=True)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lab.base import AGENT_PORT, BASE, INSTALLED_XML, NODES, STORAGE, WARDEN_MARKER, installed, node_ip, on
from lab.warden import _alert, _ha_web_config, start_agent, start_controller


def install(deb: Path, desired_text: str | None = None) -> None:
    """README.md's "Install on a real cluster", steps 2-7, on the lab's nodes (up(installed_os=
    True) first): the package with apt on every node, corosync told of its IPC entry, the keys
    made and copied, the desired file from `export` (or `desired_text`), /etc/default, the alert
    agent, then the agents and the controller started from their installed units."""
    if not installed():
        raise SystemExit("lab: install() needs a lab made with up(installed_os=True)")
    xfer = BASE / "xfer"  # what an operator copies between nodes (scp), not left behind
    shutil.rmtree(xfer, ignore_errors=True)
    xfer.mkdir(mode=0o700)
    for node in NODES:  # 2. the package, and corosync's IPC entry loaded
        on(node, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
           str(deb.resolve()), timeout=300)
        on(node, "corosync-cfgtool", "-R")
    for node in NODES:  # 3. keys: one per node, the controller's once, copied everywhere
        on(node, "kvm-warden", "keys", "generate", "/etc/kvm-warden/keys", node,
           "--owner", "kvm-warden")
        on(node, "cp", f"/etc/kvm-warden/keys/{node}.key", str(xfer))
    on("kvm1", "kvm-warden", "keys", "generate", "/etc/kvm-warden/keys", "controller",
       "--owner", "kvm-warden")
    on("kvm1", "cp", "/etc/kvm-warden/keys/controller.key",
       "/etc/kvm-warden/keys/controller.key_secret", str(xfer))
    web = _ha_web_config()  # the lab's TLS certificate and user, copied to kvm1 below
    for node in NODES:
        if node != "kvm1":
            on(node, "install", "-o", "kvm-warden", "-g", "kvm-warden", "-m", "0600",
               str(xfer / "controller.key_secret"), "/etc/kvm-warden/keys/")
        for peer in (*NODES, "controller"):
            on(node, "install", "-m", "0644", str(xfer / f"{peer}.key"), "/etc/kvm-warden/allow/")
        # 5. settings: this node's bus address; the controller's web configuration
        on(node, "sed", "-i",
           "-e", f"s|^KVM_WARDEN_AGENT_BIND=.*|KVM_WARDEN_AGENT_BIND=tcp://{node_ip(node)}:{AGENT_PORT}|",
           "-e", "s|^KVM_WARDEN_WEB_CONFIG=.*|KVM_WARDEN_WEB_CONFIG=--web-config "
           "/etc/kvm-warden/web.yml|",
           "-e", "s|^KVM_WARDEN_AGENT_OPTIONS=.*|KVM_WARDEN_AGENT_OPTIONS="
           f"--config-dir {STORAGE} --config-dir {INSTALLED_XML}|",
           "/etc/default/kvm-warden")
    # the VMs' XML directory enrollment writes to, given to the group kvm-warden (step 5)
    shutil.rmtree(BASE / "storage" / "xml", ignore_errors=True)
    on("kvm1", "install", "-d", "-g", "kvm-warden", "-m", "0775", INSTALLED_XML)
    for name in ("cert.pem", "key.pem"):
        on("kvm1", "install", "-o", "kvm-warden", "-g", "kvm-warden", "-m", "0600",
           str(web.parent / name), f"/etc/kvm-warden/{name}")
    (xfer / "web.yml").write_text(web.read_text().replace(str(web.parent), "/etc/kvm-warden"))
    on("kvm1", "install", "-o", "kvm-warden", "-g", "kvm-warden", "-m", "0600",
       str(xfer / "web.yml"), "/etc/kvm-warden/web.yml")
    # 4. the desired file, from the cluster as it is, in the directory the controller may edit
    desired = "/etc/kvm-warden/desired/desired.yaml"
    if desired_text is None:
        desired_text = on("kvm1", "kvm-warden", "export").stdout
    (xfer / "desired.yaml").write_text(desired_text)
    on("kvm1", "install", "-o", "kvm-warden", "-g", "kvm-warden", "-m", "0640",
       str(xfer / "desired.yaml"), desired)
    on("kvm1", "kvm-warden", "validate", desired)
    shutil.rmtree(xfer)
    _alert("/usr/lib/kvm-warden/kvm-warden-alert")  # 6. the alert agent, then the agents
    (BASE / WARDEN_MARKER).touch()  # a node that boots again starts its agent (enabled)
    for node in NODES:
        start_agent(node)
    start_controller(Path(desired))  # 7. the controller (the lab runs it on kvm1)
