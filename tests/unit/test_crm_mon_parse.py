"""crm_mon XML parsing over saved real outputs (see tests/fixtures/regen.sh for the commands)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model.errors import ParseError
from controller.model.observed import ClusterStatus
from probes.pacemaker.cib import parse_cib
from probes.pacemaker.crm_mon import parse_crm_mon

FIX = Path(__file__).parent.parent / "fixtures"
SEED = (FIX / "crm_mon" / "seed-3node.xml").read_bytes()
FAILED = (FIX / "crm_mon" / "seed-failed.xml").read_bytes()
SEED_CIB = (FIX / "seed-settled.cib.xml").read_bytes()
# The same cluster as Pacemaker 3.0.0 (Debian 13) prints it, and its CIB as 3.0's scheduler
# writes it: schema pacemaker-4.0 (tests/fixtures/regen.sh, the other release's root).
V30 = FIX / "pacemaker-3.0.0"
RELEASES = {"2.1.5": (SEED, FAILED, SEED_CIB),
            "3.0.0": ((V30 / "crm_mon-seed-3node.xml").read_bytes(),
                      (V30 / "crm_mon-seed-failed.xml").read_bytes(),
                      (V30 / "seed-settled.cib.xml").read_bytes())}
both = pytest.mark.parametrize("version", sorted(RELEASES))


@both
def test_seed_cluster_has_three_online_nodes_and_a_dc(version: str) -> None:
    s = parse_crm_mon(RELEASES[version][0])
    assert s.dc == "kvm1" and s.with_quorum
    assert sorted(s.nodes) == ["kvm1", "kvm2", "kvm3"]
    assert all(n.online for n in s.nodes.values())
    assert s.nodes["kvm1"].is_dc and not s.nodes["kvm2"].is_dc


@both
def test_clone_instances_repeat_with_the_clone_as_parent(version: str) -> None:
    s = parse_crm_mon(RELEASES[version][0])
    gfs2 = s.instances("gfs2_res01")
    assert len(gfs2) == 3 and {r.parent for r in gfs2} == {"gfs2_res01-clone"}
    assert s.collectives["gfs2_res01-clone"].kind == "clone"


@both
def test_failed_monitor_is_a_failure_with_resource_task_and_rc(version: str) -> None:
    s = parse_crm_mon(RELEASES[version][1])
    (f,) = s.failures
    assert (f.resource, f.node, f.task, f.rc, f.interval_ms) == ("vm-web01", "kvm1", "monitor", 7,
                                                                 10000)
    hist = {(h.resource, h.node): h for h in s.history}
    assert hist[("vm-web01", "kvm1")].fail_count == 1


def test_crm_mon_without_a_cluster_is_a_parse_error_with_its_message() -> None:
    data = (FIX / "crm_mon" / "not-connected.xml").read_bytes()
    with pytest.raises(ParseError, match="status 102.*Connection refused"):
        parse_crm_mon(data)


def test_unknown_elements_and_attributes_are_tolerated() -> None:
    data = SEED.replace(b"<nodes>", b"<future_section x='1'/><nodes newattr='y'>", 1)
    assert sorted(parse_crm_mon(data).nodes) == ["kvm1", "kvm2", "kvm3"]


def test_legacy_crm_mon_root_is_accepted() -> None:
    legacy = (
        b'<crm_mon version="1.1.23"><summary><current_dc present="true" name="n1" '
        b'with_quorum="true"/></summary><nodes><node name="n1" online="true" '
        b'resources_running="0"/></nodes></crm_mon>'
    )
    assert parse_crm_mon(legacy).dc == "n1"


def test_a_document_that_is_not_crm_mon_names_its_root() -> None:
    with pytest.raises(ParseError, match=r"<cib>: not crm_mon XML"):
        parse_crm_mon(SEED_CIB)


def test_non_integer_resources_running_is_a_parse_error() -> None:
    bad = SEED.replace(b'resources_running="', b'resources_running="x', 1)
    with pytest.raises(ParseError, match="resources_running"):
        parse_crm_mon(bad)


@both
def test_cib_constraints_and_params_are_read(version: str) -> None:
    cfg = parse_cib(RELEASES[version][2])
    assert cfg.resources["vm-web01"].params["config"] == "/kvm/storage/xml/web01.xml"
    assert cfg.resources["vm-web01"].meta["allow-migrate"] == "true"
    assert cfg.resources["dlm"].parent == "dlm-clone"
    assert any(c.id == "cli-ban-vm-web02-on-kvm3" and c.score == "-INFINITY"
               for c in cfg.constraints.location)
    assert cfg.properties["no-quorum-policy"] == "stop"


def test_both_releases_read_the_same_cluster() -> None:
    """3.0.0 words some things differently (rc_text, a maintenance attribute, schema 4.0); what
    kvm-warden reads of the same cluster is the same."""
    old, new = (RELEASES[v] for v in ("2.1.5", "3.0.0"))
    assert b'validate-with="pacemaker-4.0"' in new[2] and b"pacemaker-4.0" not in old[2]
    for i in (0, 1):
        a, b = parse_crm_mon(old[i]), parse_crm_mon(new[i])
        assert (a.dc, a.with_quorum, sorted(a.nodes)) == (b.dc, b.with_quorum, sorted(b.nodes))
        assert {(r.id, r.role, r.nodes) for r in a.resources} == \
            {(r.id, r.role, r.nodes) for r in b.resources}
        assert [(f.resource, f.node, f.task, f.rc) for f in a.failures] == \
            [(f.resource, f.node, f.task, f.rc) for f in b.failures]
    a_cib, b_cib = parse_cib(old[2]), parse_cib(new[2])
    assert a_cib.resources == b_cib.resources and a_cib.constraints == b_cib.constraints
    assert a_cib.properties == b_cib.properties


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(SEED)))
def test_truncated_crm_mon_xml_raises_only_parse_error(cut: int) -> None:
    try:
        status = parse_crm_mon(SEED[:cut])
    except ParseError:
        return
    # Only the whole document (or one cut after its root closed) parses, and to the seed.
    assert status == parse_crm_mon(SEED)


@settings(max_examples=300, deadline=None)
@given(
    pos=st.integers(min_value=0, max_value=len(SEED) - 1),
    junk=st.binary(min_size=1, max_size=8),
)
def test_mutated_crm_mon_xml_raises_only_parse_error(pos: int, junk: bytes) -> None:
    try:
        status = parse_crm_mon(SEED[:pos] + junk + SEED[pos + len(junk):])
    except ParseError:
        return
    assert_valid_status(status)


@settings(max_examples=200, deadline=None)
@given(
    pos=st.integers(min_value=0, max_value=len(SEED_CIB) - 1),
    junk=st.binary(min_size=1, max_size=8),
)
def test_mutated_cib_raises_only_parse_error(pos: int, junk: bytes) -> None:
    try:
        cib = parse_cib(SEED_CIB[:pos] + junk + SEED_CIB[pos + len(junk):])
    except ParseError:
        return
    # A valid value: typed counters, every constraint naming what it constrains.
    assert isinstance(cib.epoch, int) and isinstance(cib.admin_epoch, int)
    assert all(isinstance(r, str) and r for r in cib.resources)
    assert all(c.id for c in (*cib.constraints.location, *cib.constraints.colocation,
                              *cib.constraints.order))


def assert_valid_status(status: ClusterStatus) -> None:
    """What every reader of a parsed crm_mon relies on: typed nodes and resources."""
    assert isinstance(status, ClusterStatus)
    assert all(name == n.name and isinstance(n.online, bool) for name, n in status.nodes.items())
    for r in status.resources:
        assert isinstance(r.id, str) and isinstance(r.active, bool)
        assert all(isinstance(n, str) for n in r.nodes)


def test_a_failed_migration_is_reported_for_its_resource_with_its_task() -> None:
    # crm_mon: <failure op_key="vm1_migrate_to_0" task="migrate_to" .../> is vm1's migrate_to.
    from probes.pacemaker.crm_mon import split_op_key

    assert split_op_key("vm1_migrate_to_0", "migrate_to") == ("vm1", "migrate_to")
    assert split_op_key("vm1_migrate_from_0", None) == ("vm1", "migrate_from")
    assert split_op_key("vm_web_01_monitor_10000", "monitor") == ("vm_web_01", "monitor")
    assert split_op_key("vm_web_01_stop_0", None) == ("vm_web_01", "stop")


def test_pacemaker_3_0_2s_removed_and_fencing_enabled_are_read() -> None:
    """Issue "Current Debian", 4: crm_mon 3.0.2 says `removed` beside `orphaned`, and its
    cluster options carry `fencing-enabled` beside `stonith-enabled` (no 3.0.2 in Debian yet:
    a real 2.1.5 output edited to that form)."""
    from controller.model.pcmk import fencing_enabled

    doc = SEED.replace(b'id="vm-web01" resource_agent="ocf:heartbeat:VirtualDomain"',
                       b'id="vm-web01" removed="true" resource_agent="ocf:heartbeat:VirtualDomain"'
                       ).replace(b"<cluster_options ", b'<cluster_options fencing-enabled="false" ')
    assert doc.count(b'removed="true"') == 1 and b'fencing-enabled="false"' in doc
    s = parse_crm_mon(doc)
    assert [r.id for r in s.resources if r.orphaned] == ["vm-web01"]
    assert s.properties["fencing-enabled"] == "false" and not fencing_enabled(s.properties)
    assert fencing_enabled(parse_crm_mon(SEED).properties) is (
        parse_crm_mon(SEED).properties.get("stonith-enabled") == "true")


@both
def test_a_drains_transition_is_read_the_same_from_both_releases(version: str) -> None:
    """crm_simulate --run of the seed with kvm1 in standby (tests/fixtures/regen.sh)."""
    from probes.pacemaker.simulate import parse_transition

    name = "crm_simulate-drain-kvm1.xml"
    path = FIX / name if version == "2.1.5" else V30 / name
    steps = {(s.resource, s.action, s.from_node, s.to_node)
             for s in parse_transition(path.read_bytes())}
    assert ("fence-kvm", "move", "kvm1", "kvm2") in steps
    assert {(r, a) for r, a, _, _ in steps} >= {("dlm", "stop"), ("clvmd", "stop")}
