"""A rolling upgrade from Debian 12 to 13, node by node, with no VM stopped (issue "Rolling
upgrade", 3 and 4), on a lab of its own.

Three Debian 12 nodes run the three guests; kvm-warden's agents and its HA controller (the
Pacemaker resource group of config/pacemaker/controller-ha.pcs) run from the Debian 12
package. The operator declares `upgrade: {to: Debian 13, order: [kvm1, kvm2, kvm3]}`; each time
kvm-warden says a node is ready to upgrade, the test does what the operator would: Pacemaker
and corosync stopped on it, the node "rebooted" onto Debian 13 (that release's /usr and /etc,
the Debian 13 package; ../shared/LAB.md section 6). The controller fails over between nodes and
releases on the way (every node is drained in turn). An independent judge (lab/checker.py,
sampling /proc five times a second) confirms no guest ever stopped -- every new qemu process
is a live migration's `-incoming` target -- and no node was ever fenced."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from lab import checker, lab
from tests.e2e.conftest import Lab
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
OLD, NEW = "12", "13"
ORDER = ("kvm1", "kvm2", "kvm3")
UPGRADE = f"upgrade:\n  to: Debian {NEW}\n  order: [{', '.join(ORDER)}]\n"


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    info = lab.up(releases=dict.fromkeys(lab.NODES, OLD), packaged_warden=True)
    print(f"lab up in {info['seconds']} s: {info['releases']}")
    env = Lab(tmp_path_factory.mktemp("rolling") / "desired.yaml")
    env.write_desired()
    try:
        lab.start_agents()
        lab.start_ha_controller(env.desired.read_text())
        wait_for("the HA controller's first pass", lambda: '"vms"' in status_text(), 180)
        yield env
    finally:
        if not os.environ.get("KVM_WARDEN_KEEP_LAB"):
            lab.down()


def online_nodes() -> list[str]:
    return [n for n in lab.NODES if lab.netns_pids(n) and lab.node_pids(n, "pacemakerd")]


def status_text() -> str:
    for via in online_nodes():
        code, body = lab.ha_get("/status", via)
        if code == 200:
            return body
    return ""


def ha_findings() -> list[str]:
    try:
        doc = json.loads(status_text() or "{}")
    except ValueError:
        return []
    return list((doc.get("last_pass") or {}).get("findings") or ())


def api_upgrade() -> dict[str, Any]:
    """The upgrade as /api/vms gives it to the web view."""
    for via in online_nodes():
        code, body = lab.ha_get("/api/vms", via)
        if code == 200:
            doc: dict[str, Any] = json.loads(body)["upgrade"]
            return doc
    raise AssertionError("no node reaches the controller's /api/vms")


def crm_mon(via: str) -> etree._Element:
    return etree.fromstring(lab.on(via, "crm_mon", "-1", "--output-as=xml").stdout.encode())


class Watch:
    """Beside the judge's samples: where the controller runs, and each step's first sighting."""

    def __init__(self) -> None:
        self.controller: list[tuple[float, str]] = []
        self.writers: list[tuple[float, list[str]]] = []  # instants with two controllers
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            running = [n for n in lab.NODES if lab.node_pids(n, lab.CONTROLLER)]
            if len(running) > 1:
                self.writers.append((time.time(), running))
            via = next(iter(online_nodes()), None)
            node = lab.ha_node(via) if via else None
            if node and (not self.controller or self.controller[-1][1] != node):
                self.controller.append((time.time(), node))

    def note(self, what: str) -> None:
        self.seen.setdefault(what, time.time())

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_rolling_upgrade_12_to_13_node_by_node_with_no_vm_stopped(rolling: Lab) -> None:
    wait_for("3 VMs running on three Debian 12 nodes", lambda: len(lab.vms_running()) == 3, 180)
    guests = sorted(lab.guests_by_node())
    assert guests == ["db01", "web01", "web02"], guests
    judge = checker.Sampler(lab.HA_SHARED, lambda: (None, False))
    judge.start()
    t0 = time.time()
    with Watch() as watch:
        (lab.HA_SHARED / "desired.yaml").write_text(rolling.desired.read_text() + UPGRADE)
        for node in ORDER:
            def ready(node: str = node) -> bool:
                said = ha_findings()
                if any(f"draining {node}" in m for m in said):
                    watch.note(f"{node} drain")
                return any(f"{node} is ready to upgrade" in m for m in said)

            wait_for(f"{node} ready to upgrade", ready, 300, 1.0)
            watch.note(f"{node} empty")
            # the web view's API says it too, node by node (what the upgrade panel shows)
            steps = {n["node"]: n["step"] for n in api_upgrade()["nodes"]}
            assert steps[node] == "ready", steps
            assert all(steps[n] == "done" for n in ORDER[:ORDER.index(node)]), steps
            assert node not in {n for ns in lab.guests_by_node().values() for n in ns}
            lab.upgrade_node(node, NEW)
            watch.note(f"{node} rebooted")
            via = next(n for n in lab.NODES if n != node)
            wait_for(f"{node} back on Debian {NEW} and out of standby", lambda node=node, via=via:
                     any(n.get("name") == node and n.get("online") == "true"
                         and n.get("standby") == "false" for n in crm_mon(via).iter("node")),
                     300, 1.0)
            watch.note(f"{node} undrained")
        wait_for("the upgrade done", lambda: any(
            f"every node of the upgrade runs Debian {NEW}" in m for m in ha_findings()), 300, 1.0)
        watch.note("done")
    judge.stop()
    # Afterwards: every node on the new release, one Pacemaker version, every VM back where
    # the file prefers it, the cluster matching the file.
    for node in lab.NODES:
        assert lab.on(node, "cat", "/etc/debian_version").stdout.startswith(f"{NEW}."), node
    def cards_on_new() -> bool:  # the node cards say what each node runs now
        code, body = lab.ha_get("/api/vms", next(iter(online_nodes())))
        cards = json.loads(body)["nodes"] if code == 200 else []
        return len(cards) == 3 and all(c["release"].startswith(f"Debian {NEW}.")
                                       and c["feature_set"] == "3.20.0" for c in cards)

    wait_for(f"every node card on Debian {NEW}, Pacemaker 3.0", cards_on_new, 60)
    root = crm_mon("kvm1")
    dc = root.find(".//current_dc")
    assert dc is not None and dc.get("mixed_version") != "true", etree.tostring(dc)
    wait_for("web01 on kvm1, web02 on kvm2", lambda: lab.vms_running().get("vm-web01") == [
        "kvm1"] and lab.vms_running().get("vm-web02") == ["kvm2"], 180)
    fenced = lab.on("kvm1", "stonith_admin", "--history", "*", "--output-as=xml").stdout
    assert "<fence_event" not in fenced, fenced
    # The judge: no guest stopped or restarted, none ran twice, its sampling never failed.
    restarted, migrations = checker.restarts(judge.samples, guests)
    assert restarted == [], restarted
    assert checker.twice(judge.samples) == []
    assert judge.samples.errors == []
    # The controller moved between nodes, and so between releases (it ends on Debian 13).
    places = [n for _, n in watch.controller]
    assert len(places) >= 2, watch.controller
    assert watch.writers == [], f"two controllers at once: {watch.writers}"
    # Every drain and return was previewed, and by whose scheduler is recorded: while the
    # cluster was mixed, the DC's version (this node's, or another node's through its agent).
    audit = [json.loads(line) for line in (lab.HA_SHARED / "audit.jsonl").read_text()
             .splitlines()]
    standby = [r for r in audit if r.get("outcome") == "applied"
               and r.get("kind") == "SetNodeAttribute" and checker.epoch_s(r) >= t0 - 1]
    assert len(standby) >= 6, standby  # each node: standby on, then off
    assert all(r.get("previewed_by") for r in standby), standby
    by = sorted({str(r["previewed_by"]) for r in standby})
    print(f"previewed by: {by}")
    timeline = {k: round(v - t0, 1) for k, v in sorted(watch.seen.items(), key=lambda kv: kv[1])}
    print(f"rolling upgrade {OLD} -> {NEW}: {timeline}; {migrations} live migrations; "
          f"controller on {[(round(t - t0, 1), n) for t, n in watch.controller]}")
    Path(lab.BASE / "rolling-upgrade.json").write_text(json.dumps(
        {"timeline": timeline, "migrations": migrations, "controller": watch.controller}))
