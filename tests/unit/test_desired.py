"""The desired-state file: every error class is reported as file:line: field: message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.model.desired import desired_json_schema, load_desired, parse_desired
from controller.model.errors import DesiredStateError

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(DesiredStateError) as exc:
        parse_desired(text, source="d.yaml")
    return list(exc.value.problems)


def test_the_example_file_is_valid_and_keeps_the_v1_fields() -> None:
    d = load_desired(EXAMPLE)
    web01 = d.vm_by_name()["web01"]
    assert web01.resource_id == "vm-web01" and web01.state == "running"
    assert web01.placement.allowed == ("kvm1", "kvm2") and web01.placement.prefer == "kvm2"
    assert web01.storage == ("gfs2_storage",) and web01.anti_affinity == ("web02",)
    assert d.vm_by_name()["db01"].resource_id == "vm-db01"
    assert d.storage[0].requires == ("clvmd-clone", "dlm-clone")
    assert d.cluster.properties == {"no-quorum-policy": "freeze", "stonith-enabled": "true"}
    assert d.policy.prefer_score == 1000 and d.policy.clear_move_leftovers is True


def test_committed_json_schema_matches_the_loader() -> None:
    committed = json.loads((ROOT / "config" / "desired-state.schema.json").read_text())
    assert committed == desired_json_schema()


def test_unknown_key() -> None:
    assert problems("version: 1\nvms:\n  - name: a\n    stat: running\n") == [
        "d.yaml:4: vms[0].stat: unknown field (did you mean 'state'?)"
    ]


def test_wrong_type() -> None:
    assert problems("version: 1\npolicy:\n  dry_run: 'no'\n") == [
        "d.yaml:3: policy.dry_run: expected a bool, got str"
    ]


def test_wrong_enum_value() -> None:
    assert problems("version: 1\nvms:\n  - name: a\n    state: paused\n") == [
        "d.yaml:4: vms[0].state: Input should be 'running', 'stopped' or 'absent'"
    ]


def test_missing_required_field() -> None:
    assert problems("version: 1\nstorage:\n  - name: s\n    mountpoint: /x\n") == [
        "d.yaml:3: storage[0].resource: required field is missing"
    ]


def test_unsupported_version() -> None:
    assert problems("version: 2\n") == [
        "d.yaml:1: version: unsupported format version 2 (this kvm-warden reads version 1)"
    ]


def test_invalid_names_cannot_reach_a_command_line() -> None:
    assert problems("version: 1\nvms:\n  - name: a\n    resource: '-rf'\n") == [
        "d.yaml:4: vms[0].resource: not a valid Pacemaker id (a letter or '_' first, then "
        "letters, digits, '_', '-', '.')"
    ]


def test_relative_mountpoint() -> None:
    assert problems(
        "version: 1\nstorage:\n  - {name: s, resource: r, mountpoint: kvm/storage}\n"
    ) == ["d.yaml:3: storage[0].mountpoint: must be an absolute path"]


def test_duplicate_vm_names_and_resources() -> None:
    assert problems("version: 1\nvms:\n  - name: a\n  - name: a\n") == [
        "d.yaml:4: vms[1].name: duplicate VM name 'a'",
        "d.yaml:4: vms[1].name: resource 'vm-a' is already used at vms[0].name",
    ]


def test_duplicate_yaml_key() -> None:
    assert problems("version: 1\npolicy:\n  dry_run: true\n  dry_run: false\n") == [
        "d.yaml:4: policy.dry_run: duplicate key"
    ]


def test_unknown_references() -> None:
    text = (
        "version: 1\ncluster:\n  nodes: [kvm1, kvm2]\nvms:\n  - name: a\n"
        "    storage: [nope]\n    anti_affinity: [ghost]\n"
        "    placement: {allowed: [kvm1, kvm9], prefer: kvm2}\n"
    )
    assert problems(text) == [
        "d.yaml:6: vms[0].storage[0]: unknown storage 'nope'",
        "d.yaml:7: vms[0].anti_affinity[0]: unknown VM 'ghost'",
        "d.yaml:8: vms[0].placement.allowed[1]: unknown node 'kvm9'",
        "d.yaml:8: vms[0].placement.prefer: node 'kvm2' is not in placement.allowed",
    ]


def test_anti_affine_vms_pinned_to_one_node_is_a_conflict() -> None:
    text = (
        "version: 1\nvms:\n  - name: a\n    placement: {allowed: [kvm1]}\n"
        "    anti_affinity: [b]\n  - name: b\n    placement: {allowed: [kvm1]}\n"
    )
    assert problems(text) == [
        "d.yaml:5: vms[0].anti_affinity[0]: conflict: 'a' and 'b' are anti-affine but both may "
        "only run on 'kvm1'"
    ]


def test_yaml_syntax_error() -> None:
    assert problems("version: 1\nvms: [\n  - name: a\n") == [
        "d.yaml:3: (document): expected the node content, but found '-'"  # PyYAML's words
    ]


def test_empty_file_and_non_mapping() -> None:
    assert problems("") == ["d.yaml:1: (document): the file is empty"]
    assert problems("- 1\n") == ["d.yaml:1: (document): expected a mapping at the top"]


def test_all_errors_are_reported_at_once() -> None:
    text = "version: 1\nbogus: 1\npolicy:\n  resync_seconds: 0\nvms:\n  - name: a\n    x: 1\n"
    assert problems(text) == [
        "d.yaml:2: bogus: unknown field",
        "d.yaml:4: policy.resync_seconds: Input should be greater than or equal to 1",
        "d.yaml:7: vms[0].x: unknown field",
    ]


def test_unquoted_boolean_property_becomes_pacemaker_text() -> None:
    d = parse_desired("version: 1\ncluster:\n  properties: {stonith-enabled: true}\n")
    assert d.cluster.properties == {"stonith-enabled": "true"}


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "controller.app.cli", "validate", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and "valid" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nvms:\n  - name: a\n    stat: x\n")
    out = subprocess.run([sys.executable, "-m", "controller.app.cli", "validate", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == f"{bad}:4: vms[0].stat: unknown field (did you mean 'state'?)"


def test_yaml_features_a_desired_file_does_not_need_are_errors_with_their_line() -> None:
    assert problems("version: 1\nbase: &b {state: running}\nvms:\n  - <<: *b\n    name: a\n") == [
        "d.yaml:4: vms[0]: YAML merge keys (<<) are not supported; write the keys out"]
    assert problems("version: !custom 1\n") == ["d.yaml:1: version: unsupported YAML tag '!custom'"]
    assert problems("version: !!int abc\n") == ["d.yaml:1: version: 'abc' is not a valid int"]
    assert problems("version: 1\nvms: &a\n  - *a\n") == [
        "d.yaml:2: vms[0]: an alias that contains itself"]  # the anchored node's line


def test_an_alias_bomb_is_refused_quickly_and_says_why() -> None:
    import time

    bomb = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghi":  # 10^9 nodes once expanded
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + prev] * 10)}]\n"
    started = time.monotonic()
    (msg,) = problems(bomb)
    assert "expands to more than 1,000,000 YAML nodes (aliases?)" in msg
    assert time.monotonic() - started < 10


def test_a_huge_file_is_refused_before_parsing() -> None:
    (msg,) = problems("version: 1\n" + "#" * (17 * 1024 * 1024))
    assert msg == "d.yaml:1: (document): the file is larger than 16 MiB"


def test_a_bad_hot_reload_keeps_the_last_good_state(tmp_path: Path) -> None:
    from controller.engine.desired_store import DesiredStore

    f = tmp_path / "d.yaml"
    f.write_text("version: 1\nvms:\n  - name: a\n")
    store = DesiredStore(str(f))
    assert store.poll() and store.generation == 1
    for bad in ("version: !!int abc\n", "version: 1\nx: &a [*a]\n", "version: !custom 1\n"):
        f.write_text(bad)
        import os

        os.utime(f, (store.generation + 10, store.generation + 10 + len(bad)))
        assert store.poll() is False
        assert store.current is not None and [v.name for v in store.current.vms] == ["a"]
        assert store.errors and store.errors[0].startswith(f"{f}:")


def test_property_names_and_values_that_would_reach_the_cib_are_checked() -> None:
    got = problems('version: 1\ncluster:\n  properties: {"a;b": x, "--force": "$(id)", '
                   'ok-name: "a\\nb"}\n')
    assert any("cluster.properties.a;b.[key]: not a Pacemaker option name" in p for p in got)
    assert any("cluster.properties.--force.[key]: not a Pacemaker option name" in p for p in got)
    assert any("cluster.properties.ok-name: must be one line of printable text" in p for p in got)


def test_a_name_whose_derived_resource_id_is_invalid_needs_resource() -> None:
    assert problems("version: 1\nvms:\n  - name: a+b\n") == [
        "d.yaml:3: vms[0].name: the resource id 'vm-a+b' derived from the name is not a valid "
        "Pacemaker id: give `resource:`"]
    assert parse_desired("version: 1\nvms:\n  - name: a+b\n    resource: vm-ab\n").vms


def test_only_a_plain_1_is_version_1() -> None:
    for text in ("true", "1.0", "0x1"):
        assert problems(f"version: {text}\n") == [
            f"d.yaml:1: version: unsupported format version {text} (this kvm-warden reads "
            "version 1)"]


@pytest.mark.parametrize(("text", "expected"), [
    # a missing ':' is noticed on the next line: the line to fix is the key's
    ("version: 1\nvms:\n  - name: a\n    state running\n    placement:\n      prefer: kvm1\n",
     "d.yaml:4: (document): could not find expected ':' (while scanning a simple key)"),
    # an unclosed quote is noticed at the end of the file: the line where it opened
    ('version: 1\ncluster:\n  name: "lab\nvms: []\n',
     "d.yaml:3: (document): found unexpected end of stream (while scanning a quoted scalar)"),
    # never a line past the end of the file
    ("version: 1\nvms:\n  - name: a\n  - name: [b\n",
     "d.yaml:4: (document): expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence)"),
    # where the parser's own line is right, it stays
    ("version: 1\nvms:\n  - name: a\n  state: running\n",
     "d.yaml:4: (document): expected <block end>, but found '?'"),
])
def test_yaml_errors_name_the_line_to_fix(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_misspelled_field_says_which_field_was_meant_at_any_depth() -> None:
    text = ("version: 1\nclustr: {}\nvms:\n  - name: a\n    anti_afinity: [b]\n"
            "    placement: {prefered: kvm1}\n    zzz: 1\n")
    assert problems(text) == [
        "d.yaml:2: clustr: unknown field (did you mean 'cluster'?)",
        "d.yaml:5: vms[0].anti_afinity: unknown field (did you mean 'anti_affinity'?)",
        "d.yaml:6: vms[0].placement.prefered: unknown field (did you mean 'prefer'?)",
        "d.yaml:7: vms[0].zzz: unknown field",
    ]
