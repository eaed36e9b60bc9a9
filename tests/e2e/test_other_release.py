"""The representative scenarios on a lab whose three nodes all run the other Debian release
(issue "Current Debian", 3): on a Debian 12 machine, Debian 13 nodes -- Pacemaker 3.0, corosync
3.1, libvirt 11, QEMU 10, Python 3.13 -- each with kvm-warden's Debian 13 package (agents and
controller run from /opt/kvm-warden, never from this machine's venv); on a Debian 13 machine,
the same with Debian 12. The scenarios are the suite's own, imported and run here against this
module's lab (the `cluster` fixture below overrides the session's): enrollment without a
restart, node loss with real fencing, the HA controller failing over, a drain and back, the
browser console following a live migration, a live migration that is not out of band
(QEMU 10 says shutdown/host on the source: engine/oob.py), and a short soak of the faults a
release can change. A lab of its own: it runs after the session's lab
is down (tests/e2e/conftest.py orders it last)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import lab
from tests.e2e.conftest import Lab, own_lab
from tests.e2e.test_chaos_soak import soak
from tests.e2e.test_console import (  # noqa: F401  (the fixture and the scenario, run here)
    test_the_console_of_a_real_guest_follows_it_through_a_live_migration,
    web,
)
from tests.e2e.test_enroll import (  # noqa: F401
    clean,
    test_a_vm_started_with_virsh_is_enrolled_without_a_restart_then_migrates_live,
)
from tests.e2e.test_faults import (  # noqa: F401
    test_a_live_migration_by_pacemaker_is_not_out_of_band,
    test_a_partitioned_node_is_fenced_and_its_vms_restart_once_on_the_survivors,
    test_the_controller_fails_over_with_its_address_desired_file_and_ledger,
)
from tests.e2e.test_lab import (  # noqa: F401
    test_a_declared_drain_live_migrates_within_the_limit_and_online_brings_them_back,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PYTHON = {"12": "Python 3.11", "13": "Python 3.13"}
PACEMAKER = {"12": "Pacemaker 2.1", "13": "Pacemaker 3.0"}


def other_release() -> str:
    return "13" if lab.host_release() == "12" else "12"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Every node on the other release, kvm-warden from that release's package."""
    yield from own_lab(dict.fromkeys(lab.NODES, other_release()),
                       tmp_path_factory.mktemp("other") / "desired.yaml")


def test_every_node_runs_the_other_release_and_kvm_warden_from_its_package(
        cluster: Lab) -> None:
    other = other_release()
    for node in lab.NODES:
        assert lab.on(node, "cat", "/etc/debian_version").stdout.startswith(f"{other}."), node
        assert PACEMAKER[other] in lab.on(node, "pacemakerd", "--version").stdout, node
    version = lab.on("kvm1", "/opt/kvm-warden/bin/kvm-warden", "--version").stdout
    assert f"(Debian {other}, {PYTHON[other]}." in version, version
    assert lab.node_pids("kvm1", "/opt/kvm-warden/bin/kvm-warden controller")
    assert all(lab.node_pids(n, "/opt/kvm-warden/bin/kvm-warden agent") for n in lab.NODES)
    assert not lab.node_pids("kvm1", r"controller\.app\.cli")  # nothing of this machine's venv
    # the controller converges the lab's layout on that release
    wait_for("web01 on kvm1, web02 on kvm2", lambda: lab.vms_running().get("vm-web01") == ["kvm1"]
             and lab.vms_running().get("vm-web02") == ["kvm2"], 180)


# The soak's kinds that a release can change (QEMU's and libvirt's events, corosync, the
# controller daemon, fencing, the HA controller's restart, a drain's live migrations), once
# each; every kind runs on this machine's release (test_chaos_soak.py).
SOAK = ("kill-guest", "suspend", "partition", "kill-node", "kill-controld", "fence-fail",
        "kill-controller", "desired-drain")


def test_a_short_soak_on_the_other_release_keeps_every_safety_promise(
        cluster: Lab, tmp_path: Path) -> None:
    soak(cluster, tmp_path, SOAK)
