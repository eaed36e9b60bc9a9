"""Fuzzing every parser with random bytes and mutations of real fixtures (bounded time).

The only outcomes allowed: the parser's typed error, or a valid value. Counts per run: the
max_examples of each test (README, "Tests"); crm_mon and CIB are fuzzed in test_crm_mon_parse.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.bus.wire import decode, encode
from controller.model.desired import parse_desired
from controller.model.errors import BusError, DesiredStateError, ParseError
from controller.model.events import DomainSeen, QuorumChanged, envelope
from controller.model.observed import Domain
from probes.corosync.quorum import parse_quorumtool
from probes.libvirt.domains import parse_domain_xml
from probes.pacemaker.alerts import parse_alert
from probes.storage.mounts import parse_dlm_ls, parse_mountinfo

FIX = Path(__file__).parent.parent / "fixtures"
EXAMPLES = 300
FAST = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """A real document with a slice replaced by random bytes, or cut short."""
    return st.one_of(
        st.tuples(st.integers(0, len(seed)), st.integers(0, 64), st.binary(max_size=64)).map(
            lambda t: seed[: t[0]] + t[2] + seed[t[0] + t[1]:]),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.binary(max_size=512),
    )


DOMAIN = (FIX / "libvirt" / "web01.xml").read_bytes()
QUORUM = (FIX / "corosync" / "two-nodes-one-up.txt").read_bytes()
MOUNTS = (FIX / "storage" / "mountinfo-gfs2.txt").read_bytes()
DLM = (FIX / "storage" / "dlm_tool-ls.txt").read_bytes()
ALERT = b'{"kind":"resource","node":"kvm1","rsc":"vm-web01","task":"stop","rc":"0","node_sequence":"17"}'
ENVELOPES = [encode(envelope("kvm1", 3, QuorumChanged(node="kvm1", quorate=True))),
             encode(envelope("kvm1", 4, DomainSeen(node="kvm1", domains=(
                 Domain(name="web01", state="running", disks=("/kvm/storage/a.qcow2",)),))))]
DESIRED = (Path(__file__).parent.parent.parent / "config" / "desired-state.example.yaml"
           ).read_bytes()


@FAST
@given(mutations(DOMAIN))
def test_domain_xml(data: bytes) -> None:
    try:
        dom = parse_domain_xml(data)
    except ParseError:
        return
    assert isinstance(dom, Domain) and dom.name


@FAST
@given(mutations(QUORUM))
def test_quorumtool_output(data: bytes) -> None:
    q = parse_quorumtool(data.decode(errors="replace"), "kvm1")  # never raises: unknown state
    assert q.state in ("ok", "unknown")


@FAST
@given(mutations(MOUNTS), mutations(DLM))
def test_mountinfo_and_dlm_tool(mounts: bytes, dlm: bytes) -> None:
    for m in parse_mountinfo(mounts.decode(errors="replace")):
        assert m.mountpoint.startswith("/") or m.mountpoint
    assert all(isinstance(n, str) for n in parse_dlm_ls(dlm.decode(errors="replace")))


@FAST
@given(mutations(ALERT))
def test_alert_datagrams(data: bytes) -> None:
    try:
        a = parse_alert(data)
    except BusError as exc:
        assert exc.reason in ("alert-undecodable", "alert-invalid")
        return
    assert a.kind and (a.sequence is None or 0 <= a.sequence < 10**18)


@FAST
@given(st.sampled_from(ENVELOPES).flatmap(mutations))
def test_bus_envelopes(data: bytes) -> None:
    try:
        env = decode(data)
    except BusError:
        return
    assert 0 <= env.seq <= 2**53 and env.kind == type(env.payload).__name__


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(DESIRED))
def test_desired_yaml(data: bytes) -> None:
    try:
        parse_desired(data.decode(errors="replace"), source="fuzz.yaml")
    except DesiredStateError as exc:
        assert all(p.startswith("fuzz.yaml:") for p in exc.problems)


def test_fuzzed_envelopes_are_msgpack_of_the_right_shape() -> None:
    # The seeds themselves decode: the fuzz starts from valid documents.
    assert [decode(e).kind for e in ENVELOPES] == ["QuorumChanged", "DomainSeen"]
    assert msgspec.msgpack.decode(ENVELOPES[0])["source"] == "kvm1"
