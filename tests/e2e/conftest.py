"""The lab every e2e scenario shares (one per session: bringing it up costs a minute), and the
helpers scenarios read it with. Each scenario starts by waiting for the converged layout and
leaves the cluster converged, so each also runs alone."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import lab
from tests.realdaemons import kvm_usable
from tests.waiting import wait_for

DESIRED = lab.E2E_DESIRED  # the layout every scenario starts from (lab/lab.py)


@dataclass
class Lab:
    desired: Path

    def write_desired(self, **over: str) -> None:
        want = {"web01": "kvm1", "web02": "kvm2", "nodes": "[kvm1, kvm2, kvm3]", "db01": "",
                "policy": "", **over}
        self.desired.write_text(DESIRED.format(**want))


def constraints() -> str:
    return lab.on("kvm1", "cibadmin", "--query", "--scope", "constraints").stdout


def metric(name: str, **labels: str) -> float | None:
    text = lab.warden_get("/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want or (not labels and not m.group(2)):
                return float(m.group(3))
    return None


def audits() -> list[dict[str, Any]]:
    """The changes kvm-warden sent to the cluster (applied or failed; refusals and out-of-band
    observations are not)."""
    return [r for r in lab.audit_records() if r.get("event") == "audit"
            and r.get("outcome") not in ("refused", "observed", "session")]


def out_of_band(vm: str | None = None) -> list[dict[str, Any]]:
    """The out-of-band records in the audit file on the state directory."""
    path = lab.BASE / "state" / "audit.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in recs if r.get("kind") == "out_of_band"
            and (vm is None or r.get("resource") == f"vm-{vm}")]


def status() -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(lab.warden_get("/status"))
    except ValueError:
        return {}
    return doc


def findings(kind_text: str) -> list[str]:
    """Messages of the controller's current findings that contain `kind_text`."""
    last = status().get("last_pass") or {}
    return [m for m in last.get("findings", ()) if kind_text in m]


def quorate() -> bool:
    out = lab.on("kvm1", "crm_mon", "-1", "--output-as=xml", check=False).stdout
    return 'with_quorum="true"' in out


def converged() -> bool:
    """The layout every scenario starts from and leaves: all three nodes online (a node fenced
    by an earlier scenario has rebooted and rejoined), web01 on kvm1, web02 on kvm2, db01 on one
    node, and nothing in flight (a stop still waiting for its graceful timeout is not "done")."""
    placed = lab.vms_running()
    return placed.get("vm-web01") == ["kvm1"] and placed.get("vm-web02") == ["kvm2"] and \
        len(placed.get("vm-db01", [])) == 1 and lab.nodes_online() == list(lab.NODES) and \
        set(lab.vm_roles().values()) == {"Started"}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not kvm_usable():
        pytest.fail("/dev/kvm is not usable: the lab needs KVM (see LAB.md)")
    info = lab.up()
    print(f"lab up in {info['seconds']} s")
    desired = tmp_path_factory.mktemp("e2e") / "desired.yaml"
    env = Lab(desired)
    env.write_desired()
    lab.start_warden(desired)
    try:
        wait_for("the controller's first pass", lambda: '"vms"' in lab.warden_get("/status"), 60)
        yield env
    finally:
        if not os.environ.get("KVM_WARDEN_KEEP_LAB"):  # keep it to look at after a failure
            lab.down()




def own_lab(releases: dict[str, str], desired: Path, first_pass: float = 90) -> Iterator[Lab]:
    """A lab of a module's own (nodes of another release), kvm-warden on it, taken down after
    (unless KVM_WARDEN_KEEP_LAB)."""
    info = lab.up(releases=releases)
    print(f"lab up in {info['seconds']} s: {info['releases']}")
    env = Lab(desired)
    env.write_desired()
    lab.start_warden(env.desired)
    try:
        wait_for("the controller's first pass", lambda: '"vms"' in lab.warden_get("/status"),
                 first_pass)
        yield env
    finally:
        if not os.environ.get("KVM_WARDEN_KEEP_LAB"):
            lab.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_lab_commands.py runs `make lab-down`, which ends the session's lab: it goes last
    among the e2e files that use it, whatever they are named; test_installed.py,
    test_mixed.py, test_other_release.py, test_other_release_installed.py and
    test_rolling_upgrade.py, which make labs of their own (kvm-warden installed from its
    package; a node, then every node, on the other Debian release, that release's package
    installed there with apt; a roll from one release to the other), after it; every other
    order is kept."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    e2e = sorted((items[i] for i in slots),
                 key=lambda item: {"test_lab_commands.py": 1, "test_installed.py": 2,
                                   "test_mixed.py": 3, "test_other_release.py": 4,
                                   "test_other_release_installed.py": 5,
                                   "test_rolling_upgrade.py": 6}
                 .get(item.path.name, 0))
    for i, item in zip(slots, e2e, strict=True):
        items[i] = item


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed scenario carries the end of the controller's log in its report: CI keeps only
    what pytest prints, and the lab (with its logs) is gone by the time anyone reads it."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed and item.path.parent == Path(__file__).parent:
        for name in ("controller.log", "kvm1/log/pacemaker.log"):
            path = lab.BASE / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-80:]
                report.sections.append((f"end of {path}", "\n".join(tail)))
