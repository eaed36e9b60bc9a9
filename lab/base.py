"""The lab's ground: its paths and settings, running a command on a node, finding a node's
processes, and which Debian release each node runs (scripts/release-root.sh's roots, kvm-warden's
package per release). The rest of lab/ builds on it; lab/lab.py is the cluster itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


# The controller's process, from this tree or from a release's package (pgrep -f, an ERE).
CONTROLLER = r"(controller\.app\.cli|/opt/kvm-warden/bin/kvm-warden) controller"

# A stdlib-only snippet run "on" a node: the node's own interpreter (a node of the other release
# has its own /usr, where this machine's interpreter is not).
NODE_PYTHON = "/usr/bin/python3"


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


def netns_ids() -> dict[str, str]:
    """Each node's network namespace as /proc/PID/ns/net names it ("net:[4026532...]")."""
    out = {}
    for node in NODES:
        try:
            out[f"net:[{os.stat(f'/run/netns/{node}').st_ino}]"] = node
        except OSError:
            pass
    return out


# -- the controller as a cluster resource (lab/ha.py) --------------------------------------------

HA_VIP = f"{NET}.100"
HA_PORT = 9810
HA_USER, HA_PASSWORD = "lab", "lab-password"
HA_SHARED = BASE / "storage" / "kvm-warden"  # /kvm/storage/kvm-warden on every node
HA_LOG = BASE / "ha" / "log"
HA_RUN_AS = "kvm-warden"  # the HA controller's own user, as the package makes it
_HA_USER_MADE = BASE / "ha-user-made"  # the lab made that user: down() removes it again
