"""Real daemons for integration tests, started on demand and stopped by what we started.

libvirtd runs in a private mount namespace (`unshare -m`) over per-test copies of
/etc/libvirt, /run/libvirt, /var/lib/libvirt and /var/cache/libvirt, with its sockets in a
per-test directory the test process can reach (`qemu:///system?socket=...`). qemu.conf uses the
lab settings of LAB.md (root, no security driver, no cgroups). Everything runs in one process
group; `stop()` kills that group, and guests by their unique names.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab.lab import QEMU_CONF


class Libvirtd:
    def __init__(self, base: Path):
        self.base = base
        self.sock = base / "sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.guests: list[str] = []

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.sock}/libvirt-sock"

    def start(self, timeout: float = 30.0) -> None:
        for d in ("etc", "run", "lib", "cache", "sock"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        etc = self.base / "etc"
        if not (etc / "qemu.conf").exists():
            shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
        (etc / "qemu.conf").write_text(QEMU_CONF)
        (etc / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.sock}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n')
        script = (
            "set -e\n"
            f"mount --bind {etc} /etc/libvirt\n"
            "mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt\n"
            f"mount --bind {self.base / 'run'} /run/libvirt\n"
            f"mount --bind {self.base / 'lib'} /var/lib/libvirt\n"
            f"mount --bind {self.base / 'cache'} /var/cache/libvirt\n"
            "virtlogd &\n"
            "exec libvirtd\n"
        )
        (self.base / "start.sh").write_text(script)
        with open(self.base / "libvirtd.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", str(self.base / "start.sh")],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.sock / "libvirt-sock").exists() and self.virsh("version").returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = (self.base / "libvirtd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"libvirtd did not start:\n{tail}")

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True,
                              timeout=60)

    def stop_daemon(self) -> None:
        """Stop libvirtd and virtlogd (guests keep running, as on a real libvirtd restart)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        for sock in self.sock.glob("*"):
            sock.unlink(missing_ok=True)

    def stop(self) -> None:
        self.stop_daemon()
        for name in self.guests:
            for pid in guest_pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def create_guest(self, name: str, vnc_port: int) -> None:
        """A tiny KVM guest with no OS (LAB.md): 64 MiB, one vCPU, default CPU model."""
        disk = self.base / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True,
                       capture_output=True, timeout=30)
        xml = self.base / f"{name}.xml"
        xml.write_text(
            "<domain type='kvm'>\n"
            f"  <name>{name}</name>\n"
            "  <memory unit='MiB'>64</memory><vcpu>1</vcpu>\n"
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
            "  <devices>\n"
            f"    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\n"
            f"    <graphics type='vnc' port='{vnc_port}' autoport='no' listen='127.0.0.1'/>\n"
            "    <memballoon model='none'/>\n"
            "  </devices>\n</domain>\n")
        self.guests.append(name)
        out = self.virsh("create", str(xml))
        if out.returncode != 0:
            raise RuntimeError(f"virsh create failed: {out.stderr}")


def guest_pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"guest={name},"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


COROSYNC_CONF = """totem {{
    version: 2
    cluster_name: warden_test
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 1000
}}
nodelist {{
{nodes}
}}
quorum {{
    provider: corosync_votequorum
}}
logging {{
    to_stderr: yes
    to_syslog: no
}}
"""

NODE = """    node {{
        name: {name}
        nodeid: {id}
        ring0_addr: 127.0.0.{id}
    }}"""

SEED_CIB = """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.8" epoch="1" num_updates="0"
     admin_epoch="0"><configuration><crm_config><cluster_property_set id="cib-bootstrap-options">
<nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="2s"/>
<nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
</cluster_property_set></crm_config><nodes/><resources/><constraints/></configuration>
<status/></cib>
"""


class ClusterNode:
    """One real corosync (+ optionally pacemakerd) in its own network, mount and UTS namespaces.

    A lab-sized version of LAB.md section 2 for a single node: per-test directories are
    bind-mounted over Pacemaker's and corosync's state, /run and /dev/shm are private tmpfs, so
    nothing touches the host's cluster stack. `nodes` > 1 lists peers that never start (quorum
    tests). Lab only: dc-deadtime is 2 s and STONITH is disabled.
    """

    def __init__(self, base: Path, nodes: int = 1, pacemaker: bool = True):
        self.base = base
        self.nodes = nodes
        self.pacemaker = pacemaker
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        b = self.base
        for d in ("cib", "pengine", "blackbox", "cores", "log", "corosync"):
            (b / d).mkdir(parents=True, exist_ok=True)
        for d in ("cib", "pengine", "blackbox", "cores", "log"):
            shutil.chown(b / d, "hacluster", "haclient")
        (b / "cib").chmod(0o750)
        cib = b / "cib" / "cib.xml"
        if not cib.exists():
            cib.write_text(SEED_CIB)
            shutil.chown(cib, "hacluster", "haclient")
            cib.chmod(0o600)
        nodes = "\n".join(NODE.format(name=f"node{i}", id=i) for i in range(1, self.nodes + 1))
        (b / "corosync.conf").write_text(COROSYNC_CONF.format(nodes=nodes))
        last = "exec /usr/sbin/pacemakerd" if self.pacemaker else (
            f"exec corosync -f -c {b}/corosync.conf")
        script = (
            "set -e\n"
            "hostname node1\n"
            "ip link set lo up\n"
            "mount -t tmpfs tmpfs /run\n"
            "mount -t tmpfs tmpfs /dev/shm\n"
            "mkdir -p /run/pacemaker /run/corosync /var/log/pacemaker\n"
            "chown hacluster:haclient /run/pacemaker\n"
            + "".join(f"mount --bind {b}/{d} /var/lib/pacemaker/{d}\n"
                      for d in ("cib", "pengine", "blackbox", "cores"))
            + f"mount --bind {b}/log /var/log/pacemaker\n"
            f"mount --bind {b}/corosync /var/lib/corosync\n"
            + (f"corosync -f -c {b}/corosync.conf > {b}/corosync.log 2>&1 &\nsleep 1.5\n"
               if self.pacemaker else "")
            + last + "\n"
        )
        (b / "start.sh").write_text(script)
        with open(b / "node.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["unshare", "-n", "-m", "-u", "--propagation", "private", "sh",
                 str(b / "start.sh")], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready():
                return
            time.sleep(0.5)
        tail = "".join(p.read_text(errors="replace")[-1500:] for p in
                       (b / "node.log", b / "corosync.log") if p.exists())
        self.stop()
        raise RuntimeError(f"cluster node did not come up in {timeout:.0f} s:\n{tail}")

    @property
    def prefix(self) -> list[str]:
        """Run a command "on" this node (LAB.md): its network and mount namespaces."""
        assert self.proc is not None
        pid = self.proc.pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt",
                f"--uts=/proc/{pid}/ns/uts"]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=60,
                              check=check)

    def ready(self) -> bool:
        if not self.pacemaker:
            return self.run("corosync-quorumtool", "-s", "-p", check=False).returncode in (0, 2)
        out = self.run("crm_mon", "-1", check=False).stdout
        return "Current DC: node1" in out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            # Pacemaker's children may outlive pacemakerd by a moment; the group goes with them.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None
