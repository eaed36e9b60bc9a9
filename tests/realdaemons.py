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

QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
remember_owner = 0
"""


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
        log = open(self.base / "libvirtd.log", "ab")  # noqa: SIM115 - owned by the child
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
