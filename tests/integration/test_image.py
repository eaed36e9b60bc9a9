"""The container image is built (scripts/build-image.sh, as `make image` does) and its own
binary runs its own Pacemaker tools, as the non-root service user."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent
IMAGES = {"13": "kvm-warden:test-deb13", "12": "kvm-warden:test-deb12"}  # the default, and 12


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module", params=sorted(IMAGES, reverse=True), ids=lambda r: f"debian{r}")
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tag(release: str) -> str:
    return IMAGES[release]


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, release: str, tag: str
              ) -> Iterator[tuple[str, Path]]:
    if shutil.which("podman") is None or shutil.which("buildah") is None:
        pytest.fail("podman/buildah missing: scripts/install-deps.sh image installs them")
    started = time.monotonic()
    built = subprocess.run([str(ROOT / "scripts" / "build-image.sh")], capture_output=True,
                           text=True, timeout=1200, env={"KVM_WARDEN_IMAGE": tag,
                                                         "RELEASE": release,
                                                         "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert built.returncode == 0, built.stdout + built.stderr
    print(f"{built.stdout.strip()} (this run: {time.monotonic() - started:.0f} s)")
    data = tmp_path_factory.mktemp("image-data")
    shutil.copy(ROOT / "tests" / "fixtures" / "seed-settled.cib.xml", data / "seed.xml")
    shutil.copy(ROOT / "config" / "desired-state.example.yaml", data / "desired.yaml")
    data.chmod(0o755)
    for f in data.iterdir():
        f.chmod(0o644)  # readable by the image's unprivileged user
    name = sh("buildah", "from", tag).stdout.strip()
    try:
        yield name, data
    finally:
        sh("buildah", "rm", name, check=False)


def run_in(container: tuple[str, Path], *argv: str) -> subprocess.CompletedProcess[str]:
    # `podman run` is refused by this machine's cgroup setup; buildah runs the image's own
    # files with chroot isolation, as the image's USER.
    name, data = container
    return sh("buildah", "run", "--isolation=chroot", "-v", f"{data}:/data", name, "--", *argv,
              check=False)


def test_the_image_runs_as_its_service_user_with_no_build_tools(
        container: tuple[str, Path], release: str, tag: str) -> None:
    assert run_in(container, "id", "-un").stdout.strip() == "kvm-warden"
    assert "haclient" in run_in(container, "id", "-nG").stdout.split()
    # One packaging path: the image holds the Debian package a node installs (make deb).
    status = run_in(container, "dpkg-query", "-W", "-f=${Status}", "kvm-warden")
    assert status.stdout == "install ok installed", status.stdout + status.stderr
    tools = run_in(container, "sh", "-c", "command -v gcc cc pip; ls -d /usr/include/python3*")
    assert tools.stdout.strip() == "", tools.stdout
    assert f"(Debian {release}," in run_in(container, "/opt/kvm-warden/bin/kvm-warden",
                                            "--version").stdout
    inspect = json.loads(sh("podman", "image", "inspect", tag).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == "kvm-warden"
    assert "/healthz" in " ".join(inspect["Healthcheck"]["Test"])
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    print(f"image size: {inspect['Size'] / 1e6:.0f} MB")


def test_the_images_own_binary_and_pacemaker_tools_work(container: tuple[str, Path]) -> None:
    help_ = run_in(container, "/opt/kvm-warden/bin/kvm-warden", "--help")
    assert help_.returncode == 0 and "plan" in help_.stdout
    observe = run_in(container, "/opt/kvm-warden/bin/kvm-warden", "observe", "--cib",
                     "/data/seed.xml", "--json")
    assert observe.returncode == 0, observe.stderr
    doc = json.loads(observe.stdout)
    assert doc["dc"] == "kvm1" and {n["name"] for n in doc["nodes"]} == {"kvm1", "kvm2", "kvm3"}
    plan = run_in(container, "/opt/kvm-warden/bin/kvm-warden", "plan", "--desired",
                  "/data/desired.yaml", "--cib", "/data/seed.xml")
    assert plan.returncode == 2, plan.stdout + plan.stderr  # changes pending, none applied
    assert "warden-order-gfs2_res01-clone-vm-db01" in plan.stdout


def test_the_images_service_passes_its_own_healthcheck_and_serves_the_web_view(
        container: tuple[str, Path], tag: str) -> None:
    """The image's `run --simulate` (its own Pacemaker tools), its HEALTHCHECK command as
    Docker would run it, and the web view with noVNC's files (from Debian's package, copied
    into the image without nodejs)."""
    inspect = json.loads(sh("podman", "image", "inspect", tag).stdout)[0]
    check = inspect["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in check[1:])
    with socket.socket() as probe:  # the build shares the host's network: a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_cmd = quoted.replace("9810", str(port))
    script = (
        f"/opt/kvm-warden/bin/kvm-warden run --simulate --http-port {port} >/tmp/run.log 2>&1 &\n"
        "pid=$!\n"  # no job control in `sh -c`: `kill %1` would leave the service running
        f"for i in $(seq 90); do sleep 1; if {check_cmd}; then echo healthy; break; fi; done\n"
        # healthy is alive (liveness): the VMs are listed once the first pass has run
        "/opt/kvm-warden/bin/python -c \"import json, time, urllib.request as u\n"
        f"vms = lambda: len(json.load(u.urlopen('http://127.0.0.1:{port}/api/vms'))['vms'])\n"
        "end = time.monotonic() + 60\n"
        "while vms() < 3 and time.monotonic() < end: time.sleep(0.5)\n"
        f"print(u.urlopen('http://127.0.0.1:{port}/novnc/core/rfb.js').status, "
        f"u.urlopen('http://127.0.0.1:{port}/').status, vms())\"\n"
        "kill $pid; wait $pid\n")
    out = run_in(container, "sh", "-c", script)
    assert "healthy" in out.stdout, out.stdout + out.stderr
    assert "200 200 3" in out.stdout, out.stdout + out.stderr
