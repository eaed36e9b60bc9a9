"""The soak, short: the seeded nemesis of lab/chaos.py against the lab with real fencing,
judged by its independent checker (lab/checker.py). `make soak` runs it for an hour; CI runs
every fault kind once (KVM_WARDEN_SOAK_MINUTES, default 0, makes it longer) with a fixed seed,
and writes its report to KVM_WARDEN_SOAK_REPORT (default: the test's tmp directory). It is the
first e2e file: test_lab_commands takes the session's lab down (it runs last, conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import chaos, soak_report
from tests.e2e.conftest import Lab, converged
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SEED = 20261201


def test_a_short_soak_keeps_every_safety_promise(cluster: Lab, tmp_path: Path) -> None:
    soak(cluster, tmp_path, chaos.FAULTS)


def soak(cluster: Lab, tmp_path: Path, faults: tuple[str, ...]) -> None:
    """Each of `faults` once (or for KVM_WARDEN_SOAK_MINUTES), judged: no violation."""
    wait_for("converged", converged, 180)
    minutes = float(os.environ.get("KVM_WARDEN_SOAK_MINUTES", "0"))  # 0: every kind once
    try:
        report = chaos.run(cluster.desired, minutes, SEED, faults)
    finally:
        cluster.write_desired()  # the scenarios' layout again
    out = Path(os.environ.get("KVM_WARDEN_SOAK_REPORT", tmp_path))
    soak_report.write(report, out)
    print(soak_report.summary(report))
    assert report.violations == []
    assert set(report.by_kind()) == set(faults)
    assert len(report.samples.proc_times) > 100 and len(report.samples.views) > 100
    assert report.converged_after_s is not None
    wait_for("converged", converged, 240)
