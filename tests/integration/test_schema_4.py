"""A CIB of schema pacemaker-4.0 -- what Pacemaker 3.0 (Debian 13) writes, and what a cluster
has once every node runs 3.0 and `cibadmin --upgrade` ran -- read and written by kvm-warden
with 3.0's own tools (issue "Current Debian", 5).

On a Debian 12 machine 3.0's tools are those of the lab's Debian 13 root
(scripts/release-root.sh), run through a small shim: a private mount namespace in which this
machine's /tmp is the root's /tmp, then chroot -- so the files kvm-warden's actuator writes are
where 3.0's crm_diff and cibadmin read them. 2.1's tools reject a 4.0 document (said below)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.preview import patched
from controller.model.actions import SetLocation, SetNodeAttribute
from lab import lab
from probes.pacemaker.cib import parse_cib
from tests.cibs import ROOT

CIB_40 = ROOT / "tests" / "fixtures" / "pacemaker-3.0.0" / "seed-settled.cib.xml"
TOOLS = ("crm_diff", "cibadmin", "crm_simulate", "crm_mon")
PREFER = SetLocation(reconciler="placement", why="web01 prefers kvm3", id="warden-prefer-vm-web01",
                     rsc="vm-web01", node="kvm3", score="1000")
DRAIN = SetNodeAttribute(reconciler="nodes", node="kvm2", name="standby", value="on",
                         why="the desired state has kvm2 standby")


def share_30() -> Path:
    """3.0's /usr/share/pacemaker (its schemas)."""
    base = Path("/") if lab.host_release() == "13" else lab.release_root("13")
    return base / "usr" / "share" / "pacemaker"


def valid_4_0(data: bytes) -> str | None:
    """None when 3.0's own pacemaker-4.0.rng accepts the document, else its first error."""
    rng = etree.RelaxNG(etree.parse(str(share_30() / "pacemaker-4.0.rng")))
    ok = rng.validate(etree.fromstring(data))
    return None if ok else str(rng.error_log.last_error)


@pytest.fixture(scope="module")
def tools_30(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """A directory of shims to 3.0's tools (None: this machine's are 3.0)."""
    if lab.host_release() == "13":
        yield None
        return
    root = lab.release_root("13")
    bin_dir = tmp_path_factory.mktemp("pacemaker-3.0")
    for tool in TOOLS:
        shim = bin_dir / tool
        shim.write_text(
            "#!/bin/sh\n"
            f"exec unshare -m sh -c 'mount --bind /tmp \"$0/tmp\" && shift && "
            f"exec chroot \"$0\" \"$@\"' {root} - /usr/sbin/{tool} \"$@\"\n")
        shim.chmod(0o755)
    yield bin_dir


def run(tools: Path | None, *argv: str, cib: Path | None = None) -> str:
    env = dict(os.environ)
    if tools is not None:
        env["PATH"] = f"{tools}:{env['PATH']}"
    if cib is not None:
        env["CIB_file"] = str(cib)
    tool = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    out = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode in (0, 1), f"{argv}: {out.returncode} {out.stderr[-600:]}"
    return out.stdout


def test_a_4_0_cib_is_read_edited_and_judged_valid_by_3_0(tools_30: Path | None,
                                                         tmp_path: Path) -> None:
    data = CIB_40.read_bytes()
    assert b'validate-with="pacemaker-4.0"' in data
    cfg = parse_cib(data)
    assert cfg.resources["vm-web01"].params["config"] == "/kvm/storage/xml/web01.xml"
    edited = tmp_path / "edited.xml"
    edited.write_bytes(etree.tostring(patched(data, (PREFER, DRAIN))))
    assert b'validate-with="pacemaker-4.0"' in edited.read_bytes()  # kept as it was
    assert valid_4_0(data) is None
    assert valid_4_0(edited.read_bytes()) is None  # 3.0's schema accepts kvm-warden's edit
    moves = run(tools_30, "crm_simulate", "-x", str(edited), "--run", "--output-as=xml")
    assert 'resource="vm-web01"' in moves and 'dest="kvm3"' in moves
    # Pacemaker 2.1.5 cannot even read it: what a mixed cluster must never be given
    if lab.host_release() == "12":
        old = subprocess.run(["crm_simulate", "-x", str(edited), "--run"], capture_output=True,
                             text=True, timeout=60)
        assert old.returncode != 0 and "pacemaker-4.0" in old.stderr, old.stderr[-300:]


def test_the_actuator_writes_a_4_0_cib_with_3_0s_tools(tools_30: Path | None,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """kvm-warden's own write path (its CibEditor, crm_diff, its rebase, cibadmin --patch),
    with 3.0's crm_diff and cibadmin on a 4.0 CIB file."""
    cib = tmp_path / "cib.xml"
    shutil.copy(CIB_40, cib)
    if tools_30 is not None:
        monkeypatch.setenv("PATH", f"{tools_30}:{os.environ['PATH']}")
    out = PacemakerActuator(str(cib)).apply([PREFER, DRAIN])
    assert all(o.applied for o in out), [o.error for o in out]
    written = run(tools_30, "cibadmin", "--query", cib=cib)
    assert 'validate-with="pacemaker-4.0"' in written
    assert ('<rsc_location id="warden-prefer-vm-web01" rsc="vm-web01" node="kvm3" '
            'score="1000"/>') in written
    assert 'name="standby" value="on"' in written
    assert valid_4_0(cib.read_bytes()) is None
