"""Odd but valid-looking input gives a clear error or a safe value, never a traceback."""

from __future__ import annotations

import pytest

from controller.actuators.pacemaker import PacemakerActuator
from controller.app.status import render_table
from controller.model.actions import Cleanup
from controller.model.errors import ParseError
from controller.model.overview import VmRow
from probes.pacemaker.cib import parse_cib
from probes.pacemaker.crm_mon import parse_crm_mon


def test_a_node_name_too_long_for_a_command_line_is_a_failed_action_not_a_crash() -> None:
    node = "n" * 70  # Pacemaker accepts it; kvm-warden's names (host names) do not
    (outcome,) = PacemakerActuator(None).apply(
        [Cleanup(reconciler="health", why="t", rsc="vm-web01", node=node)])
    assert not outcome.applied and "invalid node name" in (outcome.error or "")


@pytest.mark.parametrize("tag", ["clone", "group", "replica"])
def test_deeply_nested_xml_is_a_parse_error_or_a_value_never_a_recursion_error(tag: str) -> None:
    depth = 1500
    inner = f"<{tag} id='x'>" * depth + f"</{tag}>" * depth
    for parse, doc in (
        (parse_crm_mon, f"<pacemaker-result><resources>{inner}</resources></pacemaker-result>"),
        (parse_cib, f"<cib><configuration><resources>{inner}</resources></configuration></cib>"),
    ):
        try:
            parse(doc.encode())  # type: ignore[operator]
        except ParseError as exc:
            assert "nested too deeply" in str(exc) or "not well-formed" in str(exc)


def test_a_document_declaring_entities_is_refused() -> None:
    doc = (b'<?xml version="1.0"?><!DOCTYPE cib [<!ENTITY e "evil">]>'
           b'<cib><configuration><nodes><node id="1" uname="&e;kvm1"/></nodes></configuration>'
           b"</cib>")
    with pytest.raises(ParseError, match="document type declaration"):
        parse_cib(doc)


def test_escape_sequences_in_names_do_not_reach_the_terminal() -> None:
    row = VmRow(vm="evil\x1b[2J", resource="vm-evil", nodes=("kvm1\x07",), state="Started",
                desired_state=None, desired_node=None, drift=(), vnc_port=None, console=None)
    text = render_table((row,))
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b[2J" in text


def test_a_publisher_speaks_only_for_its_own_node_with_sane_sequence_numbers() -> None:
    import msgspec

    from controller.bus.wire import decode, encode
    from controller.model.errors import BusError
    from controller.model.events import ConfigFilesSeen, DomainSeen, Snapshot, envelope

    ok = envelope("kvm1", 1, DomainSeen(node="kvm1"))
    assert decode(encode(ok)).source == "kvm1"
    for env, reason in (
        (envelope("kvm1", 1, DomainSeen(node="kvm2")), "forged-source"),
        # what a snapshot carries speaks for its sender too
        (envelope("kvm1", 1, Snapshot(node="kvm1", payloads=(
            DomainSeen(node="kvm1"), ConfigFilesSeen(node="kvm2")))), "forged-source"),
        (msgspec.structs.replace(ok, seq=-5), "invalid"),
        (msgspec.structs.replace(ok, seq=2**64 - 1), "invalid"),
        (msgspec.structs.replace(ok, source="x" * 300), "invalid"),
    ):
        with pytest.raises(BusError) as exc:
            decode(encode(env))
        assert exc.value.reason == reason, env


def test_the_shipped_defaults_keep_plain_http_on_loopback() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent.parent / "config" / "systemd" / "kvm-warden.default"
            ).read_text()
    hosts = [line.split("=", 1)[1] for line in text.splitlines()
             if line.startswith("KVM_WARDEN_HTTP_HOST=")]
    assert hosts == ["127.0.0.1"]
