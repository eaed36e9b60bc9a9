"""The soak, short: the seeded nemesis of lab/chaos.py against the lab with real fencing,
judged by its independent checker (host /proc, kvm1's crm_mon, the audit log). `make soak` runs
it for an hour; CI runs KVM_WARDEN_SOAK_MINUTES (default 3) with a fixed seed. It is the first
e2e file: test_lab_commands takes the session's lab down (it runs last, conftest.py)."""

from __future__ import annotations

import os

import pytest

from lab import chaos
from tests.e2e.conftest import Lab, converged
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SEED = 20261201


def test_a_short_soak_keeps_every_safety_promise(cluster: Lab) -> None:
    wait_for("converged", converged, 180)
    minutes = float(os.environ.get("KVM_WARDEN_SOAK_MINUTES", "3"))
    try:
        report = chaos.run(cluster.desired, minutes, SEED, chaos.FAULTS)
    finally:
        cluster.write_desired()  # the scenarios' layout again
    print(f"soak: {report.as_dict()}")
    assert report.violations == []
    assert sum(report.faults.values()) >= 3 and report.samples > 100
    assert report.converged_after_s is not None
    wait_for("converged", converged, 240)
