"""The Debian packages, one per release, built by `make deb` (scripts/build-deb.sh) and each
installed with apt in a clean root of its release, Debian 12 and 13 (debootstrap, from the
mirror apt uses here): what it installs, the user and directories it makes, the key step of
the install guide, `systemd-analyze verify` on its units, and the controller started exactly as
its unit says (ExecStart, User, Group, SupplementaryGroups, EnvironmentFile) as that user,
writing its state where the unit lets it.

What cannot run here: systemd as PID 1, so the units' sandboxing (ProtectSystem=strict and
friends) is checked by `systemd-analyze verify`, not enforced."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.unit import Plan, plan

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ("12", "13")  # bookworm (Python 3.11) and trixie (Python 3.13): a package for each

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("debootstrap") is None, reason="no debootstrap")]


def sh(*argv: str | Path, timeout: float = 600, check: bool = True,
       **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)  # type: ignore[call-overload]


def base_root(release: str) -> Path:
    """A clean root of the release (minbase), made once and cached under build/."""
    out = sh(ROOT / "scripts" / "release-root.sh", release, "base", timeout=900)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"debian{r}")
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def deb(release: str) -> Path:
    out = sh(ROOT / "scripts" / "build-deb.sh", cwd=ROOT, timeout=1800,
             env={**os.environ, "RELEASE": release})
    (path,) = re.findall(r"build-deb: (\S+\.deb)", out.stdout)
    assert f"~deb{release}_" in path
    return Path(path)


@pytest.fixture(scope="module")
def installed(deb: Path, release: str, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Path]:
    """A copy of the release's clean root with the package installed by apt (it pulls its
    Depends: that release's python3, libvirt and Pacemaker's tools)."""
    root = tmp_path_factory.mktemp(f"debian{release}") / "root"
    sh("cp", "-a", base_root(release), root)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    cache = ROOT / "build" / f"apt-archives-{release}"  # downloaded .debs, kept between runs
    cache.mkdir(parents=True, exist_ok=True)
    archives = root / "var" / "cache" / "apt" / "archives"
    sh("mount", "--bind", cache, archives)
    sh("mount", "-t", "proc", "proc", root / "proc")
    try:
        shutil.copy(deb, root / "tmp" / deb.name)
        chroot(root, "apt-get", "update", "-qq")
        # systemd only for systemd-analyze; the package itself starts nothing.
        chroot(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
               f"/tmp/{deb.name}", "systemd", timeout=900)
        yield root
    finally:
        sh("umount", "-l", root / "proc", check=False)
        sh("umount", "-l", archives, check=False)


def chroot(root: Path, *argv: str, timeout: float = 300, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    return sh("chroot", root, *argv, timeout=timeout, check=check, env=env)


def unit_plan(root: Path, name: str, **env: str) -> Plan:
    """The installed unit as lab/unit.py (the lab's stand-in for systemd) reads it, in `root`;
    `env` overrides /etc/default/kvm-warden's values."""
    def read(path: str) -> str | None:
        try:
            text = (root / path.lstrip("/")).read_text()
        except FileNotFoundError:
            return None
        return text + "".join(f"\n{k}={v}" for k, v in env.items()) \
            if path == "/etc/default/kvm-warden" else text
    return plan(name, read=read, hostname="kvm1")


def test_the_package_installs_with_apt_and_makes_its_user_and_directories(
        installed: Path, release: str) -> None:
    version = chroot(installed, "kvm-warden", "--version").stdout
    python = {"12": "Python 3.11", "13": "Python 3.13"}[release]
    assert version.startswith("kvm-warden 0.") and f"(Debian {release}, {python}." in version, \
        version
    groups = chroot(installed, "id", "-nG", "kvm-warden").stdout.split()
    assert "kvm-warden" in groups and "haclient" in groups
    for path, owner, mode in [("etc/kvm-warden/keys", "root:kvm-warden", "750"),
                              ("etc/kvm-warden/allow", "root:kvm-warden", "750"),
                              ("etc/kvm-warden/desired", "kvm-warden:kvm-warden", "750"),
                              ("var/lib/kvm-warden", "kvm-warden:kvm-warden", "750")]:
        st = chroot(installed, "stat", "-c", "%U:%G %a", f"/{path}").stdout.split()
        assert st == [owner, mode], path
    assert "kvm-warden" in chroot(installed, "man", "-w", "kvm-warden", check=False).stdout \
        or (installed / "usr/share/man/man1/kvm-warden.1.gz").exists()
    uidgid = (installed / "etc/corosync/uidgid.d/kvm-warden").read_text()
    assert "uid: kvm-warden" in uidgid  # the agent's user may read quorum (test_cluster_real)
    completion = (installed / "usr/share/bash-completion/completions/kvm-warden").read_text()
    assert "complete -F _kvm_warden kvm-warden" in completion and "--desired" in completion
    zsh = (installed / "usr/share/zsh/vendor-completions/_kvm-warden").read_text()
    assert zsh.startswith("#compdef kvm-warden") and "--desired" in zsh
    # The alert agent Pacemaker runs, with the system python (no venv), answers:
    alert = chroot(installed, "/usr/lib/kvm-warden/kvm-warden-alert", timeout=30)
    assert "run by Pacemaker as an alert agent" in alert.stdout + alert.stderr


def test_systemd_analyze_verifies_the_units(installed: Path) -> None:
    for name in ("kvm-warden-agent.service", "kvm-warden-controller.service"):
        out = chroot(installed, "systemd-analyze", "verify", f"/lib/systemd/system/{name}",
                     check=False)
        problems = [line for line in (out.stdout + out.stderr).splitlines()
                    if name.split(".")[0] in line]
        assert out.returncode == 0 and problems == [], out.stdout + out.stderr


def test_the_controller_runs_as_its_unit_says(installed: Path) -> None:
    """The guide's key step (`keys generate --owner kvm-warden`), then the unit's ExecStart with
    its EnvironmentFile, as its User and groups, in a network namespace of its own: it runs
    and writes its state where the unit says, as that user."""
    chroot(installed, "kvm-warden", "keys", "generate", "/etc/kvm-warden/keys", "controller",
           "--owner", "kvm-warden")
    shutil.copy(ROOT / "config" / "desired-state.example.yaml",
                installed / "etc" / "kvm-warden" / "desired" / "desired.yaml")
    svc = unit_plan(installed, "kvm-warden-controller", KVM_WARDEN_AGENTS="")
    argv = svc.argv  # no agents here: the controller waits for them
    assert argv[0] == "/opt/kvm-warden/bin/kvm-warden" and "--state-dir" in argv
    state = argv[argv.index("--state-dir") + 1]
    assert state == "/var/lib/kvm-warden" and ("/var/lib/kvm-warden", 0o750) in svc.dirs
    assert svc.strict and state in svc.writable  # ProtectSystem=strict, and its state is let
    cmd = " ".join(shlex.quote(a) for a in argv)
    user, group, groups = svc.user, svc.group, ",".join(svc.groups)
    script = (f"ip link set lo up && exec chroot {shlex.quote(str(installed))} setpriv "
              f"--reuid={user} --regid={group} --groups={groups} --inh-caps=-all "
              f"env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin {cmd}")
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        lock = installed / "var" / "lib" / "kvm-warden" / "writer.lock"
        while time.monotonic() < deadline and not lock.exists() and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert lock.exists()
        owner = chroot(installed, "stat", "-c", "%U", "/var/lib/kvm-warden/writer.lock").stdout
        assert owner.strip() == "kvm-warden"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "PermissionError" not in out and "Permission denied" not in out, out[-3000:]
