"""The history database: moves with their from/to nodes and duration, failures and findings as
they appear, retention; read back the way `kvm-warden history` and the web view read it."""

from __future__ import annotations

from pathlib import Path

from controller.engine.history import Event, History, read
from controller.model.actions import Finding
from controller.model.index import build_index
from controller.model.observed import ClusterStatus, Node, ObservedState, OpHistory, Resource

NODES = {n: Node(name=n, online=True) for n in ("kvm1", "kvm2")}
VMS = {"vm-web01": "web01"}


def index(role: str, nodes: tuple[str, ...], fail_count: int = 0):  # type: ignore[no-untyped-def]
    history = (OpHistory(node="kvm1", resource="vm-web01", fail_count=fail_count),) \
        if fail_count else ()
    return build_index(ObservedState(status=ClusterStatus(
        dc="kvm1", with_quorum=True, nodes=NODES, history=history,
        resources=(Resource(id="vm-web01", agent="ocf:heartbeat:VirtualDomain", role=role,
                            active=True, nodes=nodes),))))


def test_a_live_migration_is_one_event_with_from_to_and_duration(tmp_path: Path) -> None:
    h = History(tmp_path / "history.sqlite")
    h.observe_pass(index("Started", ("kvm1",)), VMS, (), (), 100.0, full=True)
    h.observe_pass(index("Migrating", ("kvm1", "kvm2")), VMS, (), (), 101.0, full=True)
    h.observe_pass(index("Started", ("kvm2",)), VMS, (), (), 103.5, full=True)
    h.observe_pass(index("Started", ("kvm2",)), VMS, (), (), 110.0, full=True)
    (e,) = h.query("web01")
    assert (e.kind, e.from_node, e.to_node, e.duration_s) == ("migration", "kvm1", "kvm2", 2.5)
    h.close()
    # Another reader (the CLI) sees it in the file.
    assert read(tmp_path / "history.sqlite", "web01") == [e]


def test_failures_and_findings_are_recorded_when_they_appear(tmp_path: Path) -> None:
    h = History(tmp_path / "history.sqlite")
    split = Finding(reconciler="health", kind="split-brain", severity="critical",
                    subject="vm-web01@kvm2", rsc="vm-web01", node="kvm2",
                    message="split brain: ...")
    for t in (1.0, 2.0):  # the same failure and finding two passes running: one event each
        h.observe_pass(index("Started", ("kvm1",), fail_count=1), VMS, (split,), (), t, True)
    kinds = [(e.kind, e.vm, e.node) for e in h.query()]
    assert kinds == [("failure", "web01", "kvm1"), ("finding", "web01", "kvm2")]


def test_a_rolling_upgrades_steps_are_its_timeline(tmp_path: Path) -> None:
    """An upgrade finding is an event each time its step moves on, not on every pass."""
    h = History(tmp_path / "history.sqlite")

    def step(text: str) -> Finding:
        return Finding(reconciler="upgrade", kind="upgrade-step", severity="info",
                       subject="kvm1", node="kvm1", message=text)

    for t, text in ((1.0, "draining kvm1"), (2.0, "draining kvm1"), (3.0, "kvm1 is down"),
                    (4.0, "kvm1 is back")):
        h.observe_pass(index("Started", ("kvm2",)), VMS, (step(text),), (), t, True)
    assert [(e.at, e.detail) for e in h.query()] == [
        (1.0, "upgrade-step: draining kvm1"), (3.0, "upgrade-step: kvm1 is down"),
        (4.0, "upgrade-step: kvm1 is back")]


def test_retention_deletes_old_rows_only(tmp_path: Path) -> None:
    h = History(tmp_path / "history.sqlite", retention_days=30)
    day = 86400.0
    now = 1000 * day
    h.add([Event(at=now - 40 * day, kind="lifecycle", vm="web01", detail="old"),
           Event(at=now - 10 * day, kind="lifecycle", vm="web01", detail="recent")])
    assert h.prune(now, force=True) == 1
    assert [e.detail for e in h.query("web01")] == ["recent"]
    # --since filters by time.
    assert h.query("web01", since=now - 5 * day) == []


def test_history_pages_back_with_before(tmp_path: Path) -> None:
    h = History(tmp_path / "history.sqlite")
    h.add([Event(at=float(t), kind="lifecycle", vm="web01", node="kvm1", detail=f"e{t}")
           for t in range(10)])
    page = h.query("web01", limit=4)
    assert [e.at for e in page] == [6.0, 7.0, 8.0, 9.0]  # the newest, oldest first
    back = h.query("web01", limit=4, before=page[0].at)
    assert [e.at for e in back] == [2.0, 3.0, 4.0, 5.0]
    assert [e.at for e in h.query("web01", limit=4, before=back[0].at)] == [0.0, 1.0]
    h.close()
