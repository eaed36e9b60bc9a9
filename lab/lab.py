"""A real 3-node Corosync/Pacemaker/libvirt cluster on one machine, in network namespaces.

Measured on Debian 12 (docs/architecture.md, "Where no real component can run here"): nodes
kvm1..kvm3 are network namespaces on a bridge (10.213.0.0/24, inside our own namespaces only)
with a private mount + UTS namespace each (own hostname, /etc/corosync, Pacemaker and libvirt
state, /run, /dev/shm, /etc/hosts). Each node runs corosync, pacemakerd and libvirtd; the
cluster gets the seed's resources: dlm-clone, clvmd-clone and gfs2_res01-clone
(ocf:pacemaker:Dummy stand-ins: this kernel has no gfs2/dlm modules) with their
order/colocation chain, no-quorum-policy=freeze, and VirtualDomain VMs (tiny KVM guests, no OS)
whose XML and qcow2 disks live in one directory bind-mounted at
/kvm/storage on every node (the GFS2 stand-in).

Fencing is real, as in production (stonith-enabled=true): a fence device `fence-lab` runs the
lab's fence agent (lab/fence_kvmlab.py, installed as /usr/sbin/fence_kvmlab) whose power side is
the lab's power controller on the host (lab/bmc.py): `off` kills every process of the node --
Pacemaker, corosync, libvirtd, its guests, its kvm-warden agent -- and `on` boots it again.
Pacemaker alerts go to kvm-warden's alert agent on every node (`pcs alert create`), which hands
them to that node's kvm-warden agent.

Lab-only settings, said so here and in docs/testing.md: corosync token 1000 ms and dc-deadtime 5 s
for speed; libvirtd listens on tcp without auth inside the lab network; VirtualDomain's
migrate_options=--unsafe, because libvirt refuses live migration from a plain directory
("Migration without shared storage is unsafe") -- on real GFS2 it is not needed; and
force_stop=true, which VirtualDomain's documentation prescribes for guests that cannot shut down
gracefully: the lab's guests have no OS, so a graceful stop would only wait out its timeout.

Everything the lab starts runs inside its namespaces; `down` kills every PID in them
(`ip netns pids`) and deletes them, so it stops exactly what it started, also after a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.base import (
    AGENT_PORT,
    ALERT_AGENT,
    ALERT_SOCKET,
    BASE,
    BRIDGE_NS,
    CONTROLLER,
    COROSYNC_CONF,
    E2E_DESIRED,
    FENCE_AGENT,
    HA_PASSWORD,
    HA_PORT,
    HA_SHARED,
    HA_USER,
    HA_VIP,
    INSTALLED_MARKER,
    INSTALLED_XML,
    NET,
    NODE_OS,
    NODES,
    PACKAGED_MARKER,
    QEMU_CONF,
    RELEASES_FILE,
    ROOT,
    SEED_CIB,
    STORAGE,
    VMS,
    WARDEN_MARKER,
    _detach,
    _reap,
    _wait,
    foreign,
    host_release,
    in_netns,
    installed,
    netns_ids,
    netns_pids,
    node_ip,
    node_pid,
    node_pids,
    node_release,
    on,
    packaged,
    release_package,
    release_root,
    sh,
)
from lab.ha import (
    _ha_user_line,
    _remove_ha_user,
    ha_get,
    ha_node,
    start_ha_controller,
    stop_ha_controller,
)
from lab.install import (
    install,
)
from lab.warden import (
    _agent_line,
    _alert,
    _spawn,
    audit_records,
    kvm_warden_argv,
    start_agent,
    start_agents,
    start_controller,
    start_warden,
    warden_get,
)

# Every name `from lab import lab` gives: the cluster's own, and what it re-exports of
# lab/base.py, warden.py, ha.py and install.py (the scenarios use one namespace).
__all__ = [
    "AGENT_PORT",
    "ALERT_AGENT",
    "ALERT_SOCKET",
    "BASE",
    "BRIDGE_NS",
    "CONTROLLER",
    "COROSYNC_CONF",
    "E2E_DESIRED",
    "FENCE_AGENT",
    "Forwarder",
    "HA_PASSWORD",
    "HA_PORT",
    "HA_SHARED",
    "HA_USER",
    "HA_VIP",
    "INSTALLED_MARKER",
    "INSTALLED_XML",
    "NET",
    "NODES",
    "NODE_OS",
    "PACKAGED_MARKER",
    "QEMU_CONF",
    "RELEASES_FILE",
    "ROOT",
    "SEED_CIB",
    "STORAGE",
    "VMS",
    "WARDEN_MARKER",
    "_agent_line",
    "_alert",
    "_detach",
    "_fencing_and_alerts",
    "_guest_xml",
    "_ha_user_line",
    "_network",
    "_node_files",
    "_node_os",
    "_own_pacemaker_dirs",
    "_package_mount",
    "_reap",
    "_release_os",
    "_remove_ha_user",
    "_resources",
    "_spawn",
    "_start_bmc",
    "_start_node",
    "_stop_bmc",
    "_storage",
    "_wait",
    "audit_records",
    "down",
    "foreign",
    "guest_processes",
    "guests_by_node",
    "ha_get",
    "ha_node",
    "host_release",
    "in_netns",
    "install",
    "installed",
    "kill_node",
    "kvm_warden_argv",
    "main",
    "netns_ids",
    "netns_pids",
    "node_ip",
    "node_pid",
    "node_pids",
    "node_release",
    "nodes_online",
    "on",
    "packaged",
    "parse_releases",
    "release_package",
    "release_root",
    "restart_node",
    "run_on",
    "set_link",
    "sh",
    "start_agent",
    "start_agents",
    "start_controller",
    "start_ha_controller",
    "start_node",
    "start_warden",
    "stop_ha_controller",
    "up",
    "upgrade_node",
    "vm_roles",
    "vms_running",
    "warden_get",
]



def down() -> None:
    """Kill everything in the lab's namespaces and delete them (idempotent)."""
    for node in NODES:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in netns_pids(node):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM and netns_pids(node):
                time.sleep(1.0)
        sh("ip", "netns", "del", node, check=False)
    sh("ip", "netns", "del", BRIDGE_NS, check=False)
    _stop_bmc()
    for flag in ("state.json", WARDEN_MARKER, INSTALLED_MARKER, PACKAGED_MARKER, "bmc-fail",
                 RELEASES_FILE,
                 *(f"no-boot-{n}" for n in NODES)):
        (BASE / flag).unlink(missing_ok=True)
    _remove_ha_user()
    shutil.rmtree(BASE / "tmp", ignore_errors=True)
    for unpacked in BASE.glob("package-*"):  # a lab's packages are this tree's, made at up()
        shutil.rmtree(unpacked, ignore_errors=True)
    _reap()


def kill_node(node: str) -> None:
    """A node dies: every process of it, at once (kill -9), the namespace stays."""
    for pid in netns_pids(node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
    _reap()


def _stop_bmc() -> None:
    pidfile = BASE / "bmc.pid"
    try:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    pidfile.unlink(missing_ok=True)


def _start_bmc() -> None:
    """The lab's power controller on the host (lab/bmc.py), and the fence and alert agents."""
    _stop_bmc()
    shutil.copy(ROOT / "lab" / "fence_kvmlab.py", FENCE_AGENT)
    FENCE_AGENT.chmod(0o755)
    ALERT_AGENT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "probes" / "pacemaker" / "kvm_warden_alert.py", ALERT_AGENT)
    ALERT_AGENT.chmod(0o755)
    proc = _detach([sys.executable, "-m", "lab.bmc"], BASE / "bmc.log", cwd=ROOT)
    (BASE / "bmc.pid").write_text(str(proc.pid))
    _wait("the power controller", lambda: (BASE / "bmc.sock").exists(), 10, [BASE / "bmc.log"])


def _fencing_and_alerts() -> None:
    """As an operator sets them up with pcs: the fence device, then fencing on, the alert."""
    on("kvm1", "pcs", "stonith", "create", "fence-lab", "fence_kvmlab",
       f"pcmk_host_list={' '.join(NODES)}", "pcmk_host_check=static-list",
       f"socket={BASE / 'bmc.sock'}", "op", "monitor", "interval=60s")
    on("kvm1", "pcs", "property", "set", "stonith-enabled=true")
    if not installed():  # else install() creates it with the package's alert agent
        _alert(str(ALERT_AGENT))


def _network() -> None:
    sh("ip", "netns", "add", BRIDGE_NS)
    sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for i, node in enumerate(NODES, start=1):
        sh("ip", "netns", "add", node)
        sh("ip", "-n", BRIDGE_NS, "link", "add", f"veth{i}", "type", "veth", "peer", "name",
           "eth0", "netns", node)
        sh("ip", "-n", BRIDGE_NS, "link", "set", f"veth{i}", "master", "br0", "up")
        sh("ip", "-n", node, "addr", "add", f"{NET}.{i}/24", "dev", "eth0")
        sh("ip", "-n", node, "link", "set", "eth0", "up")
        sh("ip", "-n", node, "link", "set", "lo", "up")


def _node_files(node: str) -> Path:
    d = BASE / node
    for sub in ("corosync-etc", "corosync-lib", "cib", "pengine", "blackbox", "cores", "log",
                "libvirt-etc", "libvirt-lib", "libvirt-cache"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("cib", "pengine", "blackbox", "cores", "log"):
        shutil.chown(d / sub, "hacluster", "haclient")
    (d / "cib").chmod(0o750)
    nodes = "\n".join(
        f"    node {{\n        name: {n}\n        nodeid: {i}\n        ring0_addr: {NET}.{i}\n    }}"
        for i, n in enumerate(NODES, start=1))
    (d / "corosync-etc" / "corosync.conf").write_text(COROSYNC_CONF % nodes)
    cib = d / "cib" / "cib.xml"
    for stale in (d / "cib").glob("*"):
        stale.unlink()
    cib.write_text(SEED_CIB)
    shutil.chown(cib, "hacluster", "haclient")
    cib.chmod(0o600)
    etc = d / "libvirt-etc"
    shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
    (etc / "qemu.conf").write_text(QEMU_CONF)
    (etc / "libvirtd.conf").write_text(
        f'listen_tcp = 1\nlisten_tls = 0\nlisten_addr = "{node_ip(node)}"\nauth_tcp = "none"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        # No polkit here: the socket's group says who may manage libvirt, as on hosts
        # without polkit (the packaged agent's user is in group libvirt).
        'unix_sock_group = "libvirt"\nunix_sock_rw_perms = "0770"\n')
    (d / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
        f"{node_ip(n)} {n}\n" for n in NODES))
    return d


def start_node(node: str) -> None:
    """Boot a node (idempotent: a node with processes is left alone). The power controller
    (fencing's `on`) and the tests may both boot a node: a lock makes it one boot."""
    import fcntl

    (BASE / node).mkdir(parents=True, exist_ok=True)
    with open(BASE / node / "boot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not netns_pids(node):
            _start_node(node)


def _release_os(node: str, d: Path) -> str:
    """For a node of another release: its /usr and /etc from that release's lab root, the
    lab's agents put in them, kvm-warden's package at /opt/kvm-warden. With an installed OS
    the node's own disk already lies on that release's root (_node_os): only the lab's agents
    go in, and the package is the operator's to install (install())."""
    release = node_release(node)
    root = release_root(release)
    lines = []
    layer = d / ("os" if installed() else "os-release")
    for path in () if installed() else ("usr", "etc"):
        upper, work = layer / "upper" / path, layer / "work" / path
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount -t overlay overlay -o lowerdir={root / path},upperdir={upper},"
                     f"workdir={work} /{path}\n")
    upper_usr = layer / "upper" / "usr"
    for src, dst in ((ROOT / "lab" / "fence_kvmlab.py", FENCE_AGENT),
                     (ROOT / "probes" / "pacemaker" / "kvm_warden_alert.py", ALERT_AGENT)):
        target = upper_usr / dst.relative_to("/usr")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
        target.chmod(0o755)
    return "".join(lines) + ("" if installed() else _package_mount(release))


def _package_mount(release: str) -> str:
    """kvm-warden's package for the release at /opt/kvm-warden (release_package unpacked it)."""
    package = BASE / f"package-{release}" / "opt" / "kvm-warden"
    return (f"mount -t tmpfs tmpfs /opt\nmkdir -p /opt/kvm-warden\n"
            f"mount --bind {package} /opt/kvm-warden\n")


def _own_pacemaker_dirs() -> str:
    """The node's own users own its Pacemaker directories (user ids differ between
    releases: hacluster is 102 on Debian 12 here, 101 on 13)."""
    return ("chown -R hacluster:haclient /var/lib/pacemaker/cib /var/lib/pacemaker/pengine "
            "/var/lib/pacemaker/blackbox /var/lib/pacemaker/cores /var/log/pacemaker "
            "/run/pacemaker\n")


def _node_os(node: str, d: Path) -> str:
    """The overlays that make the node's own disk: mounted first, the lab's binds go on top.
    A node of another release has that release's root below its disk (its /usr, /etc and
    dpkg's /var/lib agree: apt installs there as on a node of that release)."""
    base = release_root(node_release(node)) if foreign(node) else Path("/")
    lines = []
    for path in NODE_OS:
        upper, work = d / "os" / "upper" / path, d / "os" / "work" / path
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        lower = base / path if (base / path).is_dir() else Path("/") / path
        lines.append(f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},"
                     f"workdir={work} /{path}\n")
    return "".join(lines)


def _start_node(node: str) -> None:
    d = _node_files(node)
    binds = [
        (d / "corosync-etc", "/etc/corosync"), (d / "corosync-lib", "/var/lib/corosync"),
        (d / "cib", "/var/lib/pacemaker/cib"), (d / "pengine", "/var/lib/pacemaker/pengine"),
        (d / "blackbox", "/var/lib/pacemaker/blackbox"),
        (d / "cores", "/var/lib/pacemaker/cores"), (d / "log", "/var/log/pacemaker"),
        (d / "libvirt-etc", "/etc/libvirt"), (d / "libvirt-lib", "/var/lib/libvirt"),
        (d / "libvirt-cache", "/var/cache/libvirt"), (d / "hosts", "/etc/hosts"),
        (BASE / "storage", str(STORAGE)),
    ]
    other = foreign(node)
    script = "set -e\n" + f"hostname {node}\n" + (_node_os(node, d) if installed() else "") + (
        _release_os(node, d) if other else
        _package_mount(host_release()) if packaged() else "") + (
        "mount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /dev/shm\n"
        "mkdir -p /run/pacemaker /run/libvirt /run/resource-agents /run/corosync "
        "/var/log/pacemaker /run/kvm-warden\n"
        "chown hacluster:haclient /run/pacemaker\n"
    ) + "".join(f"mount --bind {src} {dst}\n" for src, dst in binds) + (
        _own_pacemaker_dirs() + _ha_user_line() if other else "") + (
        "virtlogd &\n"
        "libvirtd --listen &\n"
    ) + (_agent_line(node) if (BASE / WARDEN_MARKER).exists() else "") + (
        "corosync -f &\n"
        "sleep 1.5\n"
        "exec /usr/sbin/pacemakerd\n"
    )
    (d / "start.sh").write_text(script)
    proc = _detach(["ip", "netns", "exec", node, "unshare", "-m", "-u", "--propagation",
                    "private", "sh", str(d / "start.sh")], d / "node.log")
    (d / "pid").write_text(str(proc.pid))


def _guest_xml(name: str, port: int) -> str:
    # VirtualDomain finds the name with a line match: <name> must stand on its own line.
    return (
        "<domain type='kvm'>\n"
        f"  <name>{name}</name>\n"
        "  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n"
        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
        "  <devices>\n"
        f"    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{STORAGE}/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>\n"
        f"    <graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/>\n"
        "    <memballoon model='none'/>\n"
        "  </devices>\n</domain>\n")


def _storage() -> None:
    st = BASE / "storage"
    st.mkdir(parents=True, exist_ok=True)
    STORAGE.mkdir(parents=True, exist_ok=True)  # the mountpoint the nodes bind over
    for name, port in VMS:
        disk = st / f"{name}.qcow2"
        if not disk.exists():
            sh("qemu-img", "create", "-f", "qcow2", str(disk), "64M")
        (st / f"{name}.xml").write_text(_guest_xml(name, port))


def _resources(with_db_deps: bool = False) -> None:
    """The seed's cluster: the storage chain and VirtualDomain VMs, as an operator makes it
    with pcs; vm-db01 lacks its GFS2 order/colocation, as in the seed's own example."""
    pcs = ["pcs"]
    for rid in ("dlm", "clvmd", "gfs2_res01"):
        on("kvm1", *pcs, "resource", "create", rid, "ocf:pacemaker:Dummy",
           "op", "monitor", "interval=10s", "clone", "interleave=true")
    on("kvm1", *pcs, "constraint", "order", "start", "dlm-clone", "then", "clvmd-clone")
    on("kvm1", *pcs, "constraint", "colocation", "add", "clvmd-clone", "with", "dlm-clone")
    on("kvm1", *pcs, "constraint", "order", "start", "clvmd-clone", "then", "gfs2_res01-clone")
    on("kvm1", *pcs, "constraint", "colocation", "add", "gfs2_res01-clone", "with", "clvmd-clone")
    for i, (name, _) in enumerate(VMS):
        rid = f"vm-{name}"
        on("kvm1", *pcs, "resource", "create", rid, "ocf:heartbeat:VirtualDomain",
           f"config={STORAGE}/{name}.xml", "hypervisor=qemu:///system",
           "migration_transport=tcp", "migrate_options=--unsafe", "force_stop=true",
           "meta", "allow-migrate=true", "resource-stickiness=100",
           "op", "start", "timeout=90s", "op", "stop", "timeout=90s",
           "op", "migrate_to", "timeout=120s", "op", "migrate_from", "timeout=120s",
           "op", "monitor", "interval=5s", "timeout=30s")
        on("kvm1", *pcs, "constraint", "location", rid, "prefers", f"{NODES[i]}=50")
        if name != "db01" or with_db_deps:
            on("kvm1", *pcs, "constraint", "order", "start", "gfs2_res01-clone", "then", rid)
            on("kvm1", *pcs, "constraint", "colocation", "add", rid, "with", "gfs2_res01-clone")


def vms_running(via: str = "kvm1") -> dict[str, list[str]]:
    out = on(via, "crm_mon", "-1", "--output-as=xml", check=False).stdout
    from lxml import etree

    placed: dict[str, list[str]] = {}
    try:
        root = etree.fromstring(out.encode())
    except etree.XMLSyntaxError:
        return placed
    for r in root.iter("resource"):
        if r.get("resource_agent", "").endswith("VirtualDomain") and r.get("active") == "true":
            placed[str(r.get("id"))] = [str(n.get("name")) for n in r.iter("node")]
    return placed


def vm_roles(via: str = "kvm1") -> dict[str, str]:
    """Each VirtualDomain resource's role as crm_mon shows it (Started, Stopping, Migrating...)."""
    from lxml import etree

    out = on(via, "crm_mon", "-1", "--output-as=xml", check=False).stdout
    try:
        root = etree.fromstring(out.encode())
    except etree.XMLSyntaxError:
        return {}
    return {str(r.get("id")): str(r.get("role")) for r in root.iter("resource")
            if r.get("resource_agent", "").endswith("VirtualDomain")}


def nodes_online(via: str = "kvm1") -> list[str]:
    """The nodes Pacemaker sees online, as `via` sees them."""
    from lxml import etree

    out = on(via, "crm_mon", "-1", "--output-as=xml", check=False).stdout
    try:
        root = etree.fromstring(out.encode())
    except etree.XMLSyntaxError:
        return []
    return sorted(str(n.get("name")) for n in root.iter("node")
                  if n.get("online") == "true" and n.getparent() is not None
                  and n.getparent().tag == "nodes")


def up(timeout: float = 180.0, installed_os: bool = False,
       releases: dict[str, str] | None = None, packaged_warden: bool = False
       ) -> dict[str, object]:
    """The lab, from nothing. `installed_os`: every node gets its own disk (overlays, see
    NODE_OS) on which install() installs kvm-warden's package. `releases`: a node's Debian
    release when it is not this machine's (e.g. {"kvm3": "13"}: a mixed-version cluster).
    `packaged_warden`: every node runs kvm-warden from its release's package (PACKAGED_MARKER)."""
    started = time.monotonic()
    if os.geteuid() != 0:
        raise SystemExit("lab: needs root (namespaces, bridge)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise SystemExit("lab: /dev/kvm is not usable")
    down()  # a lab left by a crash is cleaned first
    BASE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(BASE / "state", ignore_errors=True)  # a new lab starts with an empty ledger
    shutil.rmtree(HA_SHARED, ignore_errors=True)  # the HA controller's too (shared storage)
    shutil.rmtree(BASE / "ha", ignore_errors=True)  # its web certificate and users are new too
    for old in BASE.glob("*.log"):  # logs of the previous lab (kept after down for reading)
        old.unlink()
    for node in NODES:  # a new lab's nodes have a clean disk: nothing installed
        shutil.rmtree(BASE / node / "os", ignore_errors=True)
        shutil.rmtree(BASE / node / "corosync-etc" / "uidgid.d", ignore_errors=True)
    if installed_os:
        (BASE / INSTALLED_MARKER).touch()
    if packaged_warden:
        (BASE / PACKAGED_MARKER).touch()
        release_package(host_release())
    wanted = {n: r for n, r in (releases or {}).items() if r != host_release()}
    (BASE / RELEASES_FILE).write_text(json.dumps(wanted))
    for node in NODES:
        shutil.rmtree(BASE / node / "os-release", ignore_errors=True)
    for release in sorted(set(wanted.values())):
        release_root(release)  # made once (minutes), cached
        release_package(release)
    _storage()
    _start_bmc()
    _network()
    for node in NODES:
        start_node(node)
    logs = [BASE / n / "node.log" for n in NODES] + [BASE / n / "log" / "corosync.log"
                                                       for n in NODES]
    _wait("3 nodes online with a DC",
          lambda: "Online: [ kvm1 kvm2 kvm3 ]" in on("kvm1", "crm_mon", "-1", check=False).stdout,
          timeout, logs)
    _fencing_and_alerts()
    # A mixed cluster is a rolling upgrade's: its VMs started on this machine's release (a VM
    # started on a newer QEMU could never live-migrate back: controller/model/machines.py).
    newer = [n for n in NODES if foreign(n)] if any(not foreign(n) for n in NODES) else []
    for node in newer:
        on("kvm1", "pcs", "node", "standby", node)
    _resources()
    _wait("3 VMs running", lambda: len(vms_running()) == len(VMS), timeout, logs)
    for node in newer:
        on("kvm1", "pcs", "node", "unstandby", node)
    info = {"nodes": list(NODES), "seconds": round(time.monotonic() - started, 1),
            "vms": vms_running(), "base": str(BASE),
            "releases": {n: node_release(n) for n in NODES}}
    (BASE / "state.json").write_text(json.dumps(info))
    return info


def run_on(p: argparse.ArgumentParser, rest: list[str]) -> int:
    if len(rest) < 2 or rest[0] not in NODES:
        p.error(f"on NODE COMMAND...: NODE is one of {', '.join(NODES)}")
    node, argv = rest[0], rest[1:]
    if argv[0] == "kvm-warden":  # the lab's: this tree's, or that release's package
        argv = [*kvm_warden_argv(node), *argv[1:]]
    pid = node_pid(node)
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt",
                           f"--uts=/proc/{pid}/ns/uts", f"--wd={os.getcwd()}", *argv],
                          check=False).returncode


def parse_releases(text: str | None) -> dict[str, str]:
    """`13` (every node) or `12,12,13` (per node, in order) -> {node: release}."""
    if not text:
        return {}
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        parts *= len(NODES)
    if len(parts) != len(NODES) or any(p not in ("12", "13") for p in parts):
        raise SystemExit(f"lab: --release is 12 or 13, one or {len(NODES)} of them: {text!r}")
    return dict(zip(NODES, parts, strict=True))


def main() -> int:
    p = argparse.ArgumentParser(prog="kvm-warden-lab", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status", "on"],
                   help="on NODE COMMAND...: run a command on that node (its network, mount "
                        "and UTS namespaces); `kvm-warden ...` runs this tree's kvm-warden there")
    p.add_argument("--with-warden", metavar="DESIRED", help="also start agents + controller")
    p.add_argument("--release", metavar="R[,R,R]",
                   help="up: each node's Debian release, 12 or 13, one for all or one per "
                        "node (12,12,13: a mixed-version cluster); default this machine's")
    if sys.argv[1:2] == ["on"]:  # everything after the node is the command's own
        return run_on(p, sys.argv[2:])
    args = p.parse_args()
    if args.action == "up":
        print(json.dumps(up(releases=parse_releases(args.release)), indent=1))
        if args.with_warden:
            start_warden(Path(args.with_warden))
            print(f"kvm-warden: agents on every node, controller on kvm1; logs in {BASE}")
    elif args.action == "down":
        down()
        print("lab: down")
    else:
        print(on("kvm1", "crm_mon", "-1").stdout)
    return 0


def guests_by_node(ids: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Guest name -> the nodes with a live qemu process for it, read straight from /proc (fast
    enough to sample every 0.1 s: "no VM runs twice at any moment" is checked with it)."""
    return {g: [n for n, _ in procs] for g, procs in guest_processes(ids).items()}


def guest_processes(ids: dict[str, str] | None = None) -> dict[str, list[tuple[str, int]]]:
    """Guest name -> (node, qemu pid) of every live qemu process for it."""
    ids = ids if ids is not None else netns_ids()
    out: dict[str, list[tuple[str, int]]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv or b"qemu-system" not in argv[0]:
                continue
            node = ids.get(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            continue
        if node is None:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name":
                name = argv[i + 1].decode(errors="replace")
                name = name.split("guest=", 1)[1].split(",", 1)[0] if "guest=" in name else name
                out.setdefault(name, []).append((node, int(pid)))
    return out


def set_link(node: str, up: bool) -> None:
    """Cut (or restore) a node's cable on the lab bridge: a network partition."""
    sh("ip", "-n", BRIDGE_NS, "link", "set", f"veth{NODES.index(node) + 1}",
       "up" if up else "down")


class Forwarder:
    """A host port that leads to a port on a node's loopback (the web view for a browser on the
    host: the controller listens inside kvm1's network namespace)."""

    def __init__(self, node: str, port: int, host_port: int = 0):
        import socket
        import threading

        self.node, self.port = node, port
        self.server = socket.create_server(("127.0.0.1", host_port), reuse_port=False)
        self.host_port = self.server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = in_netns(self.node, lambda: socket.create_connection(
                    ("127.0.0.1", self.port), timeout=10))
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(1)  # SHUT_WR: the other direction ends when its peer sees EOF
            except OSError:
                pass
            src.close()

    def close(self) -> None:
        self.server.close()


def restart_node(node: str) -> None:
    """Start a killed node again in its namespace (fresh runtime dirs, same state dirs)."""
    kill_node(node)
    start_node(node)


def upgrade_node(node: str, release: str, timeout: float = 120.0) -> None:
    """What an operator does to a drained node in a rolling upgrade: Pacemaker and corosync
    stopped cleanly (the node leaves; nobody fences it), the node "rebooted" onto `release`
    (that release's /usr and /etc, its kvm-warden package), rejoining the cluster at boot."""
    for pid in node_pids(node, "pacemakerd"):
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while node_pids(node, "pacemakerd") and time.monotonic() < deadline:
        time.sleep(0.5)
    if node_pids(node, "pacemakerd"):
        raise RuntimeError(f"lab: Pacemaker on {node} did not stop within {timeout} s")
    kill_node(node)  # corosync, libvirtd, the agent: what a reboot ends
    releases: dict[str, str] = json.loads((BASE / RELEASES_FILE).read_text())
    if release == host_release():
        releases.pop(node, None)
    else:
        releases[node] = release
        release_root(release)
        if not (BASE / f"package-{release}").exists():  # nodes already on it run from it
            release_package(release)
    (BASE / RELEASES_FILE).write_text(json.dumps(releases))
    shutil.rmtree(BASE / node / "os-release", ignore_errors=True)  # a fresh install's disk
    start_node(node)


if __name__ == "__main__":
    sys.exit(main())
