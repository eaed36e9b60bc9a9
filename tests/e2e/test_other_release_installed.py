"""kvm-warden installed with apt from the other Debian release's package, on a lab whose three
nodes run that release (issue "Current Debian", 3): on a Debian 12 machine, Debian 13 nodes
(Python 3.13, Pacemaker 3.0, corosync 3.1, libvirt 11), each with a disk of its own that lies
on that release's root -- its dpkg database, /usr and /etc agree, so apt installs the
`~deb13` package as on a real trixie node. The guide's steps (lab.install) and the installed
units (lab/unit.py, run by the node's own python3) are the same as test_installed.py's, whose
scenarios run here against this module's lab (the `packaged` fixture below overrides theirs).
A lab of its own: it runs after the session's lab is down (tests/e2e/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import lab
from tests.e2e.test_installed import (  # noqa: F401  (the scenarios, run here)
    installed_lab,
    test_a_desired_edit_is_carried_out_by_the_installed_controller,
    test_a_node_that_boots_again_runs_its_agent_from_its_own_disk,
    test_a_reviewed_edit_from_the_web_view_writes_where_the_unit_lets_it,
    test_a_running_vm_is_enrolled_and_its_xml_written_by_the_sandboxed_agent,
    test_every_service_runs_from_the_package_as_its_unit_says,
    test_pacemaker_alerts_reach_the_agent_through_the_packaged_alert_agent,
)
from tests.e2e.test_other_release import PACEMAKER, PYTHON, other_release

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from installed_lab(other_release(), tmp_path_factory)


def test_apt_installed_the_other_releases_package_on_that_release(packaged: Path) -> None:
    other = other_release()
    for node in lab.NODES:
        assert lab.on(node, "cat", "/etc/debian_version").stdout.startswith(f"{other}."), node
        assert PACEMAKER[other] in lab.on(node, "pacemakerd", "--version").stdout, node
        status = lab.on(node, "dpkg-query", "-W", "-f", "${Status} ${Version}",
                        "kvm-warden").stdout
        assert status.startswith("install ok installed ") and status.endswith(f"~deb{other}"), (
            node, status)
        version = lab.on(node, "kvm-warden", "--version").stdout
        assert f"(Debian {other}, {PYTHON[other]}." in version, (node, version)
