"""The README's install steps are the ones the lab performs (lab.install, run by
tests/e2e/test_installed.py): every kvm-warden path and command a step names is one the lab
uses, and the other way round, so the guide and the test cannot drift apart unnoticed."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from lab import lab

ROOT = Path(__file__).resolve().parents[2]
PATHS = r"(?:/etc/kvm-warden|/usr/lib/kvm-warden|/run/kvm-warden)[\w./-]*\w"


def steps(first: int, last: int) -> str:
    text = (ROOT / "README.md").read_text()
    guide = text.split("## Install on a real cluster", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", guide, re.S | re.M)
    return " ".join(body for n, body in found if first <= int(n) <= last).replace("\n   ", " ")


def test_every_step_the_lab_performs_is_in_the_guide_and_back() -> None:
    guide = steps(2, 7)
    source = inspect.getsource(lab.install) + inspect.getsource(lab._alert)
    named = {p.rstrip("/") for p in re.findall(PATHS, guide)}
    used = {p.rstrip("/") for p in re.findall(PATHS, source)}
    used.add(lab.ALERT_SOCKET)  # the recipient's value, from its constant
    assert named - used == set(), "the guide names what the lab never does"
    assert used - named == set(), "the lab does what the guide does not say"
    for command in ("corosync-cfgtool -R", "keys generate", "--owner kvm-warden", "export",
                    "validate", "pcs alert create", "recipient add"):
        assert command in guide, command
        assert all(word in source for word in command.split()), command
