"""lab/unit.py, the lab's stand-in for systemd: it must read a unit as systemd does, or a
broken unit would pass the lab's install test (tests/e2e/test_installed.py). Expected values
from systemd.service(5) and systemd.exec(5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.unit import exec_argv, many, mode_of, parse_unit, plan, read_environment_file

ROOT = Path(__file__).resolve().parents[2]

UNIT = """[Unit]
Description=x
[Service]
User=svc
SupplementaryGroups=haclient
SupplementaryGroups=libvirt
EnvironmentFile=-/etc/default/x
ExecStart=/bin/x --one ${ONE} --host %H \\
    $MANY --pct 100%% $EMPTY
StateDirectory=x
StateDirectoryMode=0750
ReadWritePaths=-/kvm/storage
ProtectSystem=strict
PrivateTmp=yes
CapabilityBoundingSet=
[Install]
WantedBy=multi-user.target
"""


def files(**extra: str) -> dict[str, str]:
    return {"/lib/systemd/system/x.service": UNIT,
            "/etc/default/x": "# comment\nONE='a b'\nMANY=--m 1 --n 2\nEMPTY=\n", **extra}


def test_exec_start_is_expanded_as_systemd_does() -> None:
    """${VAR} is one word (spaces kept), a lone $VAR splits on whitespace, an empty one
    vanishes, %H is the host name and %% a percent sign."""
    p = plan("x", read=files().get, hostname="kvm2")
    assert p.argv == ["/bin/x", "--one", "a b", "--host", "kvm2", "--m", "1", "--n", "2",
                      "--pct", "100%"]


def test_list_settings_accumulate_and_the_sandbox_is_read() -> None:
    p = plan("x", read=files().get, hostname="kvm1")
    assert (p.user, p.group, p.groups) == ("svc", "svc", ["svc", "haclient", "libvirt"])
    assert p.dirs == [("/var/lib/x", 0o750)] and p.strict and p.private_tmp and p.no_caps
    assert p.writable == ["/var/lib/x", "-/kvm/storage", "/tmp", "/var/tmp"]
    assert not p.no_new_privs  # not set in this unit


def test_a_missing_environment_file_is_an_error_unless_it_is_optional() -> None:
    unit = UNIT.replace("EnvironmentFile=-/etc/default/x", "EnvironmentFile=/etc/default/x")
    with pytest.raises(SystemExit, match="EnvironmentFile /etc/default/x is missing"):
        plan("x", read={"/lib/systemd/system/x.service": unit}.get, hostname="h")
    assert plan("x", read={"/lib/systemd/system/x.service": UNIT}.get, hostname="h").argv \
        == ["/bin/x", "--one", "", "--host", "h", "--pct", "100%"]


def test_an_empty_assignment_resets_a_list() -> None:
    settings = parse_unit("[Service]\nReadWritePaths=/a\nReadWritePaths=\nReadWritePaths=/b\n"
                          "ExecStart=/bin/true\n")
    assert many(settings, "ReadWritePaths") == ["/b"]
    assert exec_argv(settings, {}, "h") == ["/bin/true"]


def test_the_most_specific_path_decides_a_mount_s_mode() -> None:
    rw, ro = ["/var/lib/x", "/etc/kvm-warden/desired"], ["/etc/kvm-warden"]
    assert mode_of("/", True, rw, ro) == "ro"
    assert mode_of("/etc/corosync", True, rw, ro) == "ro"
    assert mode_of("/var/lib/x", True, rw, ro) == "rw"
    assert mode_of("/etc/kvm-warden", True, rw, ro) == "ro"
    assert mode_of("/etc/kvm-warden/desired", True, rw, ro) == "rw"
    assert mode_of("/dev/shm", True, rw, ro) is None  # the API file systems are left alone
    assert mode_of("/etc/kvm-warden-other", True, rw, ro) == "ro"  # a prefix, not a parent
    assert mode_of("/srv", False, rw, ro) is None  # no ProtectSystem: untouched


def test_environment_files_lose_one_level_of_quotes() -> None:
    assert read_environment_file('A="x y"\nB=\'z\'\n#C=1\nD=plain\n') == \
        {"A": "x y", "B": "z", "D": "plain"}


@pytest.mark.parametrize("name", ["kvm-warden-agent", "kvm-warden-controller"])
def test_the_shipped_units_give_their_services_what_they_write(name: str) -> None:
    """The shipped units, with the shipped /etc/default: every path the service writes is
    writable under ProtectSystem=strict (the state directory, the desired file's directory,
    the alert socket's runtime directory)."""
    shipped = {f"/lib/systemd/system/{name}.service":
               (ROOT / "config" / "systemd" / f"{name}.service").read_text(),
               "/etc/default/kvm-warden":
               (ROOT / "config" / "systemd" / "kvm-warden.default").read_text()}
    p = plan(name, read=shipped.get, hostname="kvm1")
    rw = [w.lstrip("-") for w in p.writable]
    assert p.strict and p.no_new_privs and p.no_caps and p.user == "kvm-warden"
    assert mode_of("/run/kvm-warden", True, rw, p.readonly) == "rw"  # the alert socket
    if name == "kvm-warden-controller":
        desired = p.argv[p.argv.index("--desired") + 1]
        state = p.argv[p.argv.index("--state-dir") + 1]
        assert mode_of(state, True, rw, p.readonly) == "rw"
        assert mode_of(str(Path(desired).parent), True, rw, p.readonly) == "rw"
        assert p.groups == ["kvm-warden", "haclient"]
    else:
        assert p.argv[:2] == ["/opt/kvm-warden/bin/kvm-warden", "agent"]
        assert "/etc/kvm-warden/keys/kvm1.key_secret" in p.argv
        assert p.groups == ["kvm-warden", "haclient", "libvirt"]
