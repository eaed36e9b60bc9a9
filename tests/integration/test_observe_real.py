"""The observed-state model agrees with Pacemaker's own tools on real scheduler output.

Each scenario CIB gets its status from `crm_simulate` (or a hand-written status that crm_mon
interprets); kvm-warden then reads it with the real `crm_mon` (CIB_file=). Expectations come
from the scenario itself and from `crm_resource --locate`, not from kvm-warden.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from probes.pacemaker.read import read_both
from tests import cibs
from tests.cibs import STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, dummy, simulate, vm

pytestmark = pytest.mark.usefixtures("pacemaker_tools")

VMS = vm("vm-web01") + vm("vm-web02") + vm("vm-db01")


def observe_json(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "observe", "--cib", str(path), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def nodes_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in doc["nodes"]}


def assert_agrees_with_crm_resource(path: Path, doc: dict[str, Any]) -> None:
    """Every top-level primitive's nodes equal what `crm_resource --locate` says."""
    for res in doc["resources"]:
        if res["parent"] is None:
            assert res["nodes"] == cibs.locate(path, res["id"]), res["id"]


def test_all_nodes_online_and_every_vm_placed(tmp_path: Path) -> None:
    path = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS))
    doc = observe_json(path)
    assert doc["dc"] == "kvm1" and doc["with_quorum"] is True
    assert [n["name"] for n in doc["nodes"]] == ["kvm1", "kvm2", "kvm3"]
    assert all(n["online"] and not n["unclean"] and not n["standby"] for n in doc["nodes"])
    assert sum(n["is_dc"] for n in doc["nodes"]) == 1
    assert doc["properties"]["stonith-enabled"] == "false"
    # 3 clones x 3 instances + 3 VMs, one entry per <resource>
    assert len(doc["resources"]) == 12
    dlm = [r for r in doc["resources"] if r["id"] == "dlm"]
    assert {r["parent"] for r in dlm} == {"dlm-clone"}
    assert sorted(n for r in dlm for n in r["nodes"]) == ["kvm1", "kvm2", "kvm3"]
    web = next(r for r in doc["resources"] if r["id"] == "vm-web01")
    assert web["agent"] == "ocf:heartbeat:VirtualDomain" and web["role"] == "Started"
    assert web["active"] is True and web["managed"] is True and web["failed"] is False
    assert_agrees_with_crm_resource(path, doc)
    # resources_running per node adds up to the instances crm_mon placed
    assert sum(n["resources_running"] for n in doc["nodes"]) == 12
    assert doc["failures"] == []
    assert {c["id"] for c in doc["constraints"]["order"]} == {"o-dlm-clvmd", "o-clvmd-gfs2"}


def test_offline_and_unclean_nodes(tmp_path: Path) -> None:
    fence = '<primitive id="fence-all" class="stonith" type="fence_dummy"/>'
    settled = simulate(
        tmp_path / "c.xml",
        cib(fence + STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS,
            properties={"stonith-enabled": "true"}),
    )
    failed = tmp_path / "failed.xml"
    # kvm3 drops out of membership while expected up (unclean); kvm2 leaves cleanly (offline).
    subprocess.run(
        ["crm_simulate", "-x", str(settled), "-f", "kvm3", "-d", "kvm2", "-O", str(failed)],
        check=True, capture_output=True, timeout=60,
    )
    nodes = nodes_by_name(observe_json(failed))
    assert nodes["kvm1"]["online"] and not nodes["kvm1"]["unclean"]
    assert not nodes["kvm2"]["online"] and not nodes["kvm2"]["unclean"]
    assert not nodes["kvm3"]["online"] and nodes["kvm3"]["unclean"]
    text = cibs.tool(["crm_mon", "-1"], failed)
    assert "Node kvm3: UNCLEAN (offline)" in text


def test_standby_and_maintenance_nodes_hold_no_new_resources(tmp_path: Path) -> None:
    path = simulate(
        tmp_path / "c.xml",
        cib(STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS,
            node_attrs={"kvm2": {"standby": "on"}, "kvm3": {"maintenance": "on"}}),
    )
    doc = observe_json(path)
    nodes = nodes_by_name(doc)
    assert nodes["kvm2"]["standby"] and not nodes["kvm2"]["maintenance"]
    assert nodes["kvm3"]["maintenance"] and not nodes["kvm3"]["standby"]
    assert nodes["kvm2"]["resources_running"] == 0
    for rid in ("vm-web01", "vm-web02", "vm-db01"):
        assert cibs.locate(path, rid) == ["kvm1"]
    assert_agrees_with_crm_resource(path, doc)


def test_quorum_lost(tmp_path: Path) -> None:
    path = simulate(
        tmp_path / "c.xml",
        cib(STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS, have_quorum=False,
            properties={"no-quorum-policy": "freeze"}),
    )
    doc = observe_json(path)
    assert doc["with_quorum"] is False
    assert doc["properties"]["no-quorum-policy"] == "freeze"
    # With no quorum and freeze, the scheduler starts nothing.
    assert all(not r["active"] for r in doc["resources"])


def test_failed_start_and_monitor_with_failcount(tmp_path: Path) -> None:
    path = simulate(
        tmp_path / "c.xml",
        cib(STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS),
        inject=("vm-web01_monitor_10000@kvm1=7", "vm-web02_start_0@kvm2=1"),
    )
    doc = observe_json(path)
    failures = {(f["resource"], f["task"]): f for f in doc["failures"]}
    assert failures[("vm-web01", "monitor")] == {
        "resource": "vm-web01", "node": "kvm1", "task": "monitor", "rc": 7, "status": "complete"}
    assert failures[("vm-web02", "start")]["rc"] == 1
    assert failures[("vm-web02", "start")]["node"] == "kvm2"
    status, _ = read_both(str(path))
    counts = {(h.resource, h.node): h.fail_count for h in status.history if h.fail_count}
    assert counts == {("vm-web01", "kvm1"): 1, ("vm-web02", "kvm2"): 1}
    # The scheduler recovered both: each runs on exactly one node.
    assert len(cibs.locate(path, "vm-web01")) == 1 == len(cibs.locate(path, "vm-web02"))
    assert_agrees_with_crm_resource(path, doc)


def _lrm(tree: Any, node: str, rid: str) -> Any:
    for ns in tree.iter("node_state"):
        if ns.get("uname") == node:
            for r in ns.iter("lrm_resource"):
                if r.get("id") == rid:
                    return r
    raise AssertionError(f"no lrm_resource {rid} on {node}")


def _set_last_op(lrm: Any, op: str, rc: int, status: int, call: int) -> None:
    for el in lrm:
        if el.get("id").endswith("_last_0"):
            rid = lrm.get("id")
            el.set("operation", op)
            el.set("operation_key", f"{rid}_{op}_0")
            el.set("rc-code", str(rc))
            el.set("op-status", str(status))
            el.set("call-id", str(call))
            el.set("transition-key", "9:1:0:00000000-0000-0000-0000-000000000000")
            el.set("transition-magic", f"{status}:{rc};9:1:0:00000000-0000-0000-0000-000000000000")
            el.set("migrate_source", "kvm1")
            el.set("migrate_target", "kvm2")


def test_live_migration_in_progress_and_half_done(tmp_path: Path) -> None:
    base = simulate(
        tmp_path / "c.xml",
        cib(STORAGE_CHAIN + vm("vm-web01"), STORAGE_CONSTRAINTS + (
            '<rsc_location id="l-web01" rsc="vm-web01" node="kvm1" score="100"/>')),
    )
    # migrate_to still running on the source (record-pending): crm_mon says "Migrating".
    tree = etree.parse(str(base))
    _set_last_op(_lrm(tree, "kvm1", "vm-web01"), "migrate_to", rc=193, status=-1, call=-1)
    pending = tmp_path / "pending.xml"
    tree.write(str(pending))
    doc = observe_json(pending)
    web = next(r for r in doc["resources"] if r["id"] == "vm-web01")
    assert web["nodes"] == ["kvm1"] and web["active"]
    assert web["role"] == "Migrating"  # crm_mon shows the pending op as the role
    assert "Migrating kvm1" in cibs.tool(["crm_mon", "-1"], pending)

    # migrate_to and migrate_from done, stop on the source not yet: the guest runs on the
    # target; both crm_mon and crm_resource place it there.
    tree = etree.parse(str(base))
    _set_last_op(_lrm(tree, "kvm1", "vm-web01"), "migrate_to", rc=0, status=0, call=5)
    _set_last_op(_lrm(tree, "kvm2", "vm-web01"), "migrate_from", rc=0, status=0, call=5)
    half = tmp_path / "half.xml"
    tree.write(str(half))
    doc = observe_json(half)
    web = next(r for r in doc["resources"] if r["id"] == "vm-web01")
    assert web["nodes"] == cibs.locate(half, "vm-web01")
    assert "kvm2" in web["nodes"]


def test_clones_promotable_groups_bundle_and_remote_node(tmp_path: Path) -> None:
    promotable = (
        '<clone id="db-clone">'
        + cibs.nvpairs("db-clone", "meta_attributes", {"promotable": "true"})
        + dummy("db", "ocf:pacemaker:Stateful")
        + "</clone>"
    )
    group = '<group id="web-group">' + dummy("ip") + dummy("nginx") + "</group>"
    bundle = (
        '<bundle id="httpd-bundle"><docker image="pcmk:http" replicas="2"/>'
        '<network ip-range-start="192.168.122.131" host-netmask="24"/>'
        + dummy("httpd", "ocf:heartbeat:apache") + "</bundle>"
    )
    remote = (
        '<primitive id="rnode1" class="ocf" provider="pacemaker" type="remote">'
        + cibs.nvpairs("rnode1", "instance_attributes", {"server": "10.213.0.50"})
        + "</primitive>"
    )
    path = simulate(
        tmp_path / "c.xml",
        cib(STORAGE_CHAIN + promotable + group + bundle + remote + vm("vm-web01"),
            # Stateful sets no promotion score in a simulation: a constraint gives one.
            STORAGE_CONSTRAINTS + '<rsc_location id="db-promote" rsc="db-clone" '
            'role="Promoted" node="kvm2" score="100"/>'),
        up=("kvm1", "kvm2", "kvm3", "rnode1"),
    )
    doc = observe_json(path)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in doc["resources"]:
        by_id.setdefault(r["id"], []).append(r)
    roles = sorted(r["role"] for r in by_id["db"])
    assert roles.count("Promoted") == 1, roles
    assert next(r for r in by_id["db"] if r["role"] == "Promoted")["nodes"] == ["kvm2"]
    assert {r["parent"] for r in by_id["db"]} == {"db-clone"}
    assert by_id["ip"][0]["parent"] == "web-group" == by_id["nginx"][0]["parent"]
    assert by_id["ip"][0]["nodes"] == by_id["nginx"][0]["nodes"]  # a group runs together
    bundled = [r for r in doc["resources"] if r["parent"] == "httpd-bundle"]
    assert bundled, "bundle replicas appear with the bundle as parent"
    assert any(r["id"] == "httpd" or r["id"].startswith("httpd") for r in bundled)
    nodes = nodes_by_name(doc)
    assert "rnode1" in nodes
    # crm_mon 2.1.5 reports type="member" for a remote node read from a file; what matters is
    # that it is a node that is online and runs resources, as crm_mon's text says.
    assert nodes["rnode1"]["online"] and nodes["rnode1"]["resources_running"] > 0
    assert "Online: [ kvm1 kvm2 kvm3 rnode1 ]" in cibs.tool(["crm_mon", "-1"], path)
    status, _ = read_both(str(path))
    assert status.collectives["db-clone"].promotable
    assert status.collectives["httpd-bundle"].kind == "bundle"
    promoted = cibs.tool(["crm_resource", "--locate", "--resource", "db-clone"], path)
    promoted_node = next(ln.split(":", 1)[1].split()[0]
                         for ln in promoted.splitlines() if "Promoted" in ln or "Master" in ln)
    assert next(r for r in by_id["db"] if r["role"] == "Promoted")["nodes"] == [promoted_node]


def test_constraints_with_rules_and_resource_sets(tmp_path: Path) -> None:
    constraints = STORAGE_CONSTRAINTS + (
        '<rsc_location id="loc-rule" rsc="vm-web01">'
        '<rule id="loc-rule-r" score="-INFINITY"><expression id="loc-rule-e" '
        'attribute="#uname" operation="ne" value="kvm1"/></rule></rsc_location>'
        '<rsc_location id="loc-plain" rsc="vm-web02" node="kvm2" score="50" role="Started"/>'
        '<rsc_order id="ord-set"><resource_set id="ord-set-0" sequential="true">'
        '<resource_ref id="vm-db01"/><resource_ref id="vm-web02"/></resource_set></rsc_order>'
        '<rsc_colocation id="col-set" score="-INFINITY"><resource_set id="col-set-0" '
        'sequential="false"><resource_ref id="vm-web01"/><resource_ref id="vm-web02"/>'
        "</resource_set></rsc_colocation>"
        '<rsc_order id="ord-opt" first="vm-db01" then="vm-web01" kind="Optional" '
        'symmetrical="false"/>'
    )
    path = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + VMS, constraints))
    subprocess.run(["crm_verify", "-x", str(path)], check=True, capture_output=True, timeout=60)
    doc = observe_json(path)
    loc = {c["id"]: c for c in doc["constraints"]["location"]}
    assert loc["loc-rule"] == {"id": "loc-rule", "rsc": "vm-web01", "node": None, "score": None,
                               "role": None, "rule": True}
    assert loc["loc-plain"] == {"id": "loc-plain", "rsc": "vm-web02", "node": "kvm2",
                                "score": "50", "role": "Started", "rule": False}
    order = {c["id"]: c for c in doc["constraints"]["order"]}
    assert order["ord-opt"] == {"id": "ord-opt", "first": "vm-db01", "then": "vm-web01",
                                "kind": "Optional", "symmetrical": False}
    assert order["ord-set"]["first"] is None and order["ord-set"]["then"] is None
    col = {c["id"]: c for c in doc["constraints"]["colocation"]}
    assert col["col-set"] == {"id": "col-set", "rsc": None, "with_rsc": None,
                              "score": "-INFINITY"}
    # The rule keeps vm-web01 on kvm1, and the set colocation keeps web02 off its node.
    assert cibs.locate(path, "vm-web01") == ["kvm1"]
    assert cibs.locate(path, "vm-web02") != ["kvm1"]
    _, cib_cfg = read_both(str(path))
    sets = next(c for c in cib_cfg.constraints.order if c.id == "ord-set").sets
    assert sets[0].resources == ("vm-db01", "vm-web02") and sets[0].sequential is True


def test_saved_crm_mon_xml_gives_the_same_document_without_constraints(tmp_path: Path) -> None:
    path = simulate(tmp_path / "c.xml", cib(STORAGE_CHAIN + VMS, STORAGE_CONSTRAINTS))
    saved = tmp_path / "crm_mon.xml"
    saved.write_text(cibs.tool(["crm_mon", "-1", "--output-as=xml"], path))
    out = subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "observe", "--crm-mon-xml", str(saved), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    from_file = json.loads(out.stdout)
    from_cib = observe_json(path)
    assert from_file["constraints"] == {"location": [], "order": [], "colocation": []}
    from_cib["constraints"] = from_file["constraints"]
    assert from_file == from_cib


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<cib><configuration", "not well-formed XML"),
        (b"<nodes/>", "<nodes>: not a CIB"),
        (b"", "empty document"),
    ],
)
def test_broken_cib_gives_one_line_error_and_exit_1(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(content)
    out = subprocess.run(
        [sys.executable, "-m", "controller.app.cli", "observe", "--cib", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert expected in out.stderr
