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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

NODES = ("kvm1", "kvm2", "kvm3")
BRIDGE_NS = "kvmlab-br"
NET = "10.213.0"
BASE = Path(os.environ.get("KVM_WARDEN_LAB_DIR", "/var/tmp/kvm-warden-lab"))
STORAGE = Path("/kvm/storage")
VMS = (("web01", 5901), ("web02", 5902), ("db01", 5903))
ROOT = Path(__file__).resolve().parent.parent
# The lab's qemu.conf (no cgroups, no dynamic ownership, no security driver: namespaces on one
# host, not a production hypervisor); the libvirtd tests use the same one.
QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
remember_owner = 0
"""

AGENT_PORT = 9820
ALERT_SOCKET = "/run/kvm-warden/alerts.sock"  # on every node (each node has its own /run)
FENCE_AGENT = Path("/usr/sbin/fence_kvmlab")
ALERT_AGENT = Path("/usr/local/libexec/kvm-warden-alert")
WARDEN_MARKER = "warden-agents"  # present: a node boots with its kvm-warden agent
# Present: the nodes run kvm-warden from its Debian package, as installed (see install()).
INSTALLED_MARKER = "installed"
# Present: every node runs kvm-warden from its release's package at /opt/kvm-warden (unpacked,
# not installed with apt): one path on every node, whichever release it runs -- a rolling
# upgrade's HA controller fails over between releases.
PACKAGED_MARKER = "packaged"
# What the package writes on a node, each an overlay of the host's directory whose upper layer
# is the node's own disk (BASE/kvmN/os): dpkg, apt and adduser work as on a real node and the
# host's own files are never touched.
NODE_OS = ("etc", "usr", "opt", "var/lib", "var/log", "var/cache")
UNIT_RUNNER = ROOT / "lab" / "unit.py"  # the lab's stand-in for systemd (no systemd here)
# Each node's Debian release ("12" or "13"): a node of another release than this machine's is
# the same node with that release's /usr and /etc (overlays of scripts/release-root.sh's lab
# root, LAB.md section 6) and runs kvm-warden from that release's package.
RELEASES_FILE = "releases.json"
INSTALLED_XML = f"{STORAGE}/xml"  # with the package: a directory of XML files kvm-warden may write

COROSYNC_CONF = """totem {
    version: 2
    cluster_name: kvm_cluster
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 1000
}
nodelist {
%s
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_logfile: yes
    logfile: /var/log/pacemaker/corosync.log
    to_syslog: no
}
"""

SEED_CIB = """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.8" epoch="1" num_updates="0"
 admin_epoch="0"><configuration><crm_config><cluster_property_set id="cib-bootstrap-options">
<nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="5s"/>
<nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
<nvpair id="cib-bootstrap-options-no-quorum-policy" name="no-quorum-policy" value="freeze"/>
<nvpair id="cib-bootstrap-options-cluster-recheck-interval" name="cluster-recheck-interval"
 value="1min"/>
</cluster_property_set></crm_config><nodes/><resources/><constraints/></configuration><status/>
</cib>
"""



# The desired file of the e2e scenarios and the soak (str.format: web01, web02, nodes, db01,
# policy): web01 on kvm1, web02 on kvm2 and apart from web01, db01 anywhere.
E2E_DESIRED = """version: 1
cluster:
  properties: {{no-quorum-policy: freeze}}
  nodes: {nodes}
storage:
  - name: gfs2_storage
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
    requires: [clvmd-clone, dlm-clone]
vms:
  - name: web01
    placement: {{prefer: {web01}}}
  - name: web02
    placement: {{prefer: {web02}}}
    anti_affinity: [web01]
  - name: db01
{db01}policy:
  resync_seconds: 5
  clear_move_leftovers: true
  pause_grace_seconds: 1
{policy}"""

def sh(*argv: str, check: bool = True, timeout: float = 60, **kw: object
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)  # type: ignore[call-overload]


def node_ip(node: str) -> str:
    return f"{NET}.{NODES.index(node) + 1}"


def node_pid(node: str) -> int:
    return int((BASE / node / "pid").read_text())


def on(node: str, *argv: str, check: bool = True, timeout: float = 60
       ) -> subprocess.CompletedProcess[str]:
    """Run a command "on" a node: its network, mount and UTS namespaces (LAB.md)."""
    pid = node_pid(node)
    return sh("nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt",
              f"--uts=/proc/{pid}/ns/uts", *argv, check=check, timeout=timeout)


def netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split()]


def node_pids(node: str, pattern: str) -> list[str]:
    """PIDs of this node's processes whose command line matches `pattern`.

    The nodes share the host's PID namespace, so a bare `pgrep` "on" a node sees every node's
    processes; the node's own are those in its network namespace.
    """
    mine = set(netns_pids(node))
    out = sh("pgrep", "-f", pattern, check=False).stdout.split()
    return [p for p in out if int(p) in mine]


# The lab's daemons outlive the calls that start them; they are kept here (and reaped by
# down()) so that nothing is left for the garbage collector to warn about.
_children: list[subprocess.Popen[bytes]] = []


def _detach(argv: list[str], log_path: Path, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a lab daemon in its own session, its output appended to `log_path`."""
    with open(log_path, "ab") as log:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=cwd, env=env,
                                start_new_session=True)
    _children.append(proc)
    return proc


def _reap() -> None:
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


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


def _alert(path: str) -> None:
    on("kvm1", "pcs", "alert", "create", "id=kvm-warden", f"path={path}")
    on("kvm1", "pcs", "alert", "recipient", "add", "kvm-warden", f"value={ALERT_SOCKET}",
       "id=kvm-warden-agent")


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


def installed() -> bool:
    return (BASE / INSTALLED_MARKER).exists()


def packaged() -> bool:
    return (BASE / PACKAGED_MARKER).exists()


def host_release() -> str:
    return Path("/etc/debian_version").read_text().split(".")[0].strip()


def node_release(node: str) -> str:
    """The node's Debian release, as `up(releases=...)` set it (this machine's by default)."""
    try:
        releases: dict[str, str] = json.loads((BASE / RELEASES_FILE).read_text())
    except (OSError, ValueError):
        return host_release()
    return releases.get(node, host_release())


def foreign(node: str) -> bool:
    """Whether the node runs another release than this machine (its own /usr and /etc)."""
    return node_release(node) != host_release()


def release_root(release: str) -> Path:
    """That release's lab root (made once, cached under build/)."""
    out = sh(str(ROOT / "scripts" / "release-root.sh"), release, "lab", check=True, timeout=1800)
    return Path(out.stdout.strip().splitlines()[-1])


def release_package(release: str) -> Path:
    """kvm-warden's package for the release, unpacked (its /opt/kvm-warden runs on that
    release's python3)."""
    out = sh(str(ROOT / "scripts" / "build-deb.sh"), check=True, timeout=1800,
             env={**os.environ, "RELEASE": release})
    deb = out.stdout.strip().splitlines()[-1].split()[1]
    unpacked = BASE / f"package-{release}"
    shutil.rmtree(unpacked, ignore_errors=True)
    sh("dpkg-deb", "-x", deb, str(unpacked))
    return unpacked


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


def _own_pacemaker_dirs() -> str:
    """The node's own users own its Pacemaker directories (user ids differ between
    releases: hacluster is 102 on Debian 12 here, 101 on 13)."""
    return ("chown -R hacluster:haclient /var/lib/pacemaker/cib /var/lib/pacemaker/pengine "
            "/var/lib/pacemaker/blackbox /var/lib/pacemaker/cores /var/log/pacemaker "
            "/run/pacemaker\n")


# The controller's process, from this tree or from a release's package (pgrep -f, an ERE).
CONTROLLER = r"(controller\.app\.cli|/opt/kvm-warden/bin/kvm-warden) controller"

# A stdlib-only snippet run "on" a node: the node's own interpreter (a node of the other release
# has its own /usr, where this machine's interpreter is not).
NODE_PYTHON = "/usr/bin/python3"


def kvm_warden_argv(node: str) -> list[str]:
    """How kvm-warden runs on the node: this tree with this interpreter, or on a node of
    another release its package (a venv of this machine's python3 cannot run there)."""
    if foreign(node) or packaged():
        return ["/opt/kvm-warden/bin/kvm-warden"]
    return [sys.executable, "-m", "controller.app.cli"]


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


def _agent_line(node: str) -> str:
    """The node's kvm-warden agent, started at boot like its systemd unit would be."""
    import shlex

    argv = " ".join(shlex.quote(a) for a in _agent_argv(node))
    if installed():  # as systemd would start the enabled unit
        argv = f"/usr/bin/python3 {UNIT_RUNNER} start kvm-warden-agent"
    return f"(cd {shlex.quote(str(ROOT))} && exec {argv}) >> {BASE / f'agent-{node}.log'} 2>&1 &\n"


def _wait(what: str, cond, timeout: float, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (subprocess.SubprocessError, OSError, ValueError):
            pass
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs
                      if p.exists())
    raise SystemExit(f"lab: {what} not ready after {timeout:.0f} s\n{tails}")


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


# -- kvm-warden in the lab: an agent on every node, the controller on kvm1 --------------------

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


def netns_ids() -> dict[str, str]:
    """Each node's network namespace as /proc/PID/ns/net names it ("net:[4026532...]")."""
    out = {}
    for node in NODES:
        try:
            out[f"net:[{os.stat(f'/run/netns/{node}').st_ino}]"] = node
        except OSError:
            pass
    return out


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


# -- the controller as a cluster resource (config/pacemaker/controller-ha.pcs) ----------------

HA_VIP = f"{NET}.100"
HA_PORT = 9810
HA_USER, HA_PASSWORD = "lab", "lab-password"
HA_SHARED = BASE / "storage" / "kvm-warden"  # /kvm/storage/kvm-warden on every node
HA_LOG = BASE / "ha" / "log"
HA_RUN_AS = "kvm-warden"  # the HA controller's own user, as the package makes it
_HA_USER_MADE = BASE / "ha-user-made"  # the lab made that user: down() removes it again


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


def in_netns(node: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a node's network namespace (on a short-lived thread: setns changes only the
    calling thread). A socket made there stays there: the host can talk into a node with it."""
    import ctypes
    import threading

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    out: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{node}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), f"setns into {node}")
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


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


# -- kvm-warden installed from its Debian package, as README.md's install guide says ----------

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
