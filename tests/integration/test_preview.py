"""The transition preview and the disruption gate, judged by Pacemaker's own scheduler."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probes.pacemaker.simulate import parse_transition
from tests import cibs
from tests.cibs import STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
ROOT = Path(__file__).parent.parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"


def plan(desired: Path, cib_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "plan", "--desired", str(desired), "--cib",
         str(cib_file), *extra], capture_output=True, text=True, timeout=120)


def scheduler(cib_file: Path) -> set[tuple[str, str]]:
    out = subprocess.run(["crm_simulate", "-x", str(cib_file), "-S", "--output-as=xml"],
                         capture_output=True, timeout=120, check=True).stdout
    return {(s.resource, s.action) for s in parse_transition(out)}


def test_the_preview_is_what_the_scheduler_does_after_the_patch(tmp_path: Path) -> None:
    work = tmp_path / "cib.xml"
    shutil.copy(SEED, work)
    shown = json.loads(plan(EXAMPLE, work, "--json").stdout)
    predicted = {(s["resource"], s["action"]) for s in shown["transition"]}
    assert predicted == {("vm-web01", "migrate"), ("vm-web02", "migrate")}
    assert {"from", "to"} <= set(shown["transition"][0])
    text = plan(EXAMPLE, work).stdout
    assert "live-migrate vm-web01 kvm1 → kvm2" in text and "2 migrate" in text
    assert plan(EXAMPLE, work, "--apply", "--state-dir", str(tmp_path / "s")).returncode == 0
    assert scheduler(work) == predicted  # Pacemaker, on the patched CIB, does exactly that


def stranded(tmp_path: Path) -> tuple[Path, Path]:
    """web01 runs on kvm1; the file would allow it only on kvm3, which is down."""
    work = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + vm("vm-web01"), STORAGE_CONSTRAINTS),
                    down=("kvm3",))
    desired = tmp_path / "desired.yaml"
    desired.write_text("version: 1\nvms:\n  - name: web01\n    placement: {allowed: [kvm3]}\n")
    return work, desired


def test_a_patch_that_would_stop_a_running_vm_is_refused_whole(tmp_path: Path) -> None:
    work, desired = stranded(tmp_path)
    running = cibs.locate(work, "vm-web01")
    before = work.read_bytes()
    out = plan(desired, work, "--apply", "--state-dir", str(tmp_path / "s"))
    assert "REFUSED: would-disrupt" in out.stdout and "stop vm-web01" in out.stdout
    assert out.returncode == 2 and work.read_bytes() == before  # the CIB is unchanged
    assert cibs.locate(work, "vm-web01") == running
    allowed = plan(desired, work, "--apply", "--allow-disruption", "--state-dir",
                   str(tmp_path / "s"))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert ("vm-web01", "stop") in scheduler(work)


def test_policy_can_allow_disruption(tmp_path: Path) -> None:
    work, desired = stranded(tmp_path)
    desired.write_text(desired.read_text() + "policy: {allow_disruption: true}\n")
    assert plan(desired, work, "--apply", "--state-dir", str(tmp_path / "s")).returncode == 0
