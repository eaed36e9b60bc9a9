"""The soak's checker judges by itself: its verdicts on known histories."""

from __future__ import annotations

import datetime as dt

from lab.chaos import OVERLAP_GRACE, Twice, unsafe_changes


def test_a_guest_on_two_nodes_past_the_switch_over_is_a_violation_once() -> None:
    t = Twice()
    assert t.see(0.0, "web01", ["kvm1", "kvm2"]) is None  # a live migration's switch-over
    assert t.see(OVERLAP_GRACE / 2, "web01", ["kvm1", "kvm2"]) is None
    assert t.see(0.5, "web01", ["kvm2"]) is None  # it ended: a new episode starts from zero
    assert t.see(1.0, "web01", ["kvm1", "kvm2"]) is None
    v = t.see(1.0 + OVERLAP_GRACE + 0.1, "web01", ["kvm1", "kvm2"])
    assert v is not None and "web01 ran on kvm1, kvm2 at once" in v
    assert t.see(10.0, "web01", ["kvm1", "kvm2"]) is None  # reported once per episode


def test_a_change_applied_without_quorum_is_a_violation() -> None:
    at = dt.datetime(2026, 12, 1, 22, 0, 0, tzinfo=dt.UTC)
    stamp = at.timestamp()
    rec = {"event": "audit", "outcome": "applied", "action": "location x",
           "at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    no_quorum = [(stamp - 0.5, False, []), (stamp + 0.5, False, [])]
    fine = [(stamp - 0.5, True, []), (stamp + 0.5, True, [])]
    unclean = [(stamp, True, ["kvm3"])]
    assert unsafe_changes([rec], no_quorum, 0.0) == [
        "location x applied at 2026-12-01T22:00:00Z while Pacemaker said no quorum"]
    assert unsafe_changes([rec], unclean, 0.0)[0].endswith("unclean: kvm3")
    assert unsafe_changes([rec], fine, 0.0) == []
    assert unsafe_changes([{**rec, "outcome": "refused"}], no_quorum, 0.0) == []
    assert unsafe_changes([rec], no_quorum, stamp + 10) == []  # before the soak began
