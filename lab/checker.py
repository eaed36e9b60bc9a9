"""The soak's independent judge: it does not use kvm-warden's code to judge kvm-warden.

It samples, from the host, on its own threads:
- every node's qemu processes in /proc (guest name, node by network namespace, and whether the
  process is a live migration's `-incoming` target), five times a second;
- every live node's own view of the cluster (`crm_mon --output-as=xml` and its local CIB copy,
  `cibadmin --query --local`): DC, quorum, online and unclean nodes, pending fencing,
  maintenance mode, the CIB's epoch, the ids kvm-warden owns (warden-*), and resources
  Pacemaker sees active on several nodes;
- the controller's RSS and thread count (/proc/PID/status), its /healthz, and the record counts
  of its state directory (audit lines, history rows, whether the ledger parses).

The invariants are pure functions of those samples (below `Samples`), so they are unit-tested
on hand-made timelines (tests/unit/test_chaos.py). They are Pacemaker's own CTS audits that
ship disabled (one DC per partition, CIB agreement, a resource active on several nodes, active
without quorum), made real, plus kvm-warden's promises (no change while unsafe, every change
audited, every fault in the history, nothing written lost, bounded memory, a truthful /healthz).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from lab import lab

OVERLAP_GRACE = 2.0     # s a guest may run on two nodes: a live migration's switch-over
SPLIT_GRACE = 15.0      # s two nodes of one partition may disagree on the DC (an election)
AGREE_GRACE = 15.0      # s the CIB may differ between nodes of one settled partition
MULTI_GRACE = 10.0      # s Pacemaker may show a primitive active on several nodes (a recovery)
AUDIT_WINDOW = 30.0     # s between an audit record and the CIB sample that shows its change
HEALTH_GRACE = 45.0     # s after a (re)start or resume in which /healthz may still fail
HEALTH_STREAK = 20.0    # s of failed /healthz while the controller should be healthy: a lie
RSS_WARMUP = 90.0       # s after a start before the controller's memory is taken as its base
RSS_FACTOR, RSS_SLACK_KB, THREAD_SLACK = 1.5, 40_000, 8
PARSER = etree.XMLParser(resolve_entities=False, huge_tree=False)
# Properties Pacemaker's own daemons write (on a DC election, after a cleanup): not kvm-warden's.
PACEMAKERS_OWN = frozenset({"dc-version", "cluster-infrastructure", "cluster-name",
                            "last-lrm-refresh", "have-watchdog"})
VIRTUALDOMAIN_UTILIZATION = frozenset({"cpu", "hv_memory", "host_memory"})


@dataclass(frozen=True)
class View:
    """One node's view of the cluster at one instant (crm_mon + its local CIB)."""
    at: float
    node: str
    dc: str | None
    quorate: bool
    online: frozenset[str]
    unclean: tuple[str, ...]
    fencing: bool
    maintenance: bool
    epoch: tuple[int, int] | None       # (admin_epoch, epoch): the configuration's version
    owned: frozenset[str]               # ids of warden-* constraints
    multi_active: tuple[str, ...]       # primitives active on several nodes, not migrating
    # (id, value) of every nvpair in the configuration but those Pacemaker writes itself:
    # properties, meta attributes, node attributes (standby) -- what kvm-warden sets
    settings: frozenset[tuple[str, str]] = frozenset()

    @property
    def unsafe(self) -> str | None:
        """Why kvm-warden must change nothing now, in this node's view (None: it may)."""
        if not self.quorate:
            return "no quorum"
        if self.unclean:
            return "unclean: " + ", ".join(self.unclean)
        if self.fencing:
            return "fencing pending"
        if self.maintenance:
            return "maintenance mode"
        return None


def parse_view(node: str, at: float, crm_mon: str, cib: str | None) -> View | None:
    try:
        mon = etree.fromstring(crm_mon.encode(), parser=PARSER)
    except etree.XMLSyntaxError:
        return None
    dc_el = mon.find("summary/current_dc")
    dc = dc_el.get("name") if dc_el is not None and dc_el.get("present") == "true" else None
    opts = mon.find("summary/cluster_options")
    nodes = mon.findall("nodes/node")
    multi = []
    for r in mon.iter("resource"):
        parent = r.getparent()
        in_clone = parent is not None and parent.tag == "clone"
        if not in_clone and int(r.get("nodes_running_on", "0")) > 1 \
                and r.get("role") != "Migrating":
            multi.append(str(r.get("id")))
    epoch, owned, settings = None, frozenset[str](), frozenset[tuple[str, str]]()
    if cib:
        try:
            root = etree.fromstring(cib.encode(), parser=PARSER)
            epoch = (int(root.get("admin_epoch", "0")), int(root.get("epoch", "0")))
            owned = frozenset(str(e.get("id")) for e in root.findall("configuration/"
                                                                      "constraints/*")
                              if str(e.get("id", "")).startswith("warden-"))
            settings = frozenset((str(e.get("id")), str(e.get("value")))
                                 for e in root.iter("nvpair")
                                 if e.get("name") not in PACEMAKERS_OWN
                                 and not _agents_own(e) and _in_configuration(e))
        except (etree.XMLSyntaxError, ValueError):
            pass
    return View(
        at=at, node=node, dc=dc,
        quorate=dc_el is not None and dc_el.get("with_quorum") == "true",
        online=frozenset(str(n.get("name")) for n in nodes if n.get("online") == "true"),
        unclean=tuple(str(n.get("name")) for n in nodes if n.get("unclean") == "true"),
        fencing=any(e.get("status") == "pending" for e in mon.iter("fence_event")),
        maintenance=opts is not None and opts.get("maintenance-mode") == "true",
        epoch=epoch, owned=owned, settings=settings, multi_active=tuple(sorted(multi)))


def _agents_own(e: etree._Element) -> bool:
    """A VM's utilization that VirtualDomain writes itself on every start and migration (its
    autoset_utilization_cpu/_hv_memory/_host_memory, on by default; host_memory since
    resource-agents 4.16, Debian 13): the agent's, not kvm-warden's (the soak's file declares
    no capacity, so kvm-warden writes no utilization there)."""
    parent = e.getparent()
    return (parent is not None and parent.tag == "utilization"
            and e.get("name") in VIRTUALDOMAIN_UTILIZATION)


def _in_configuration(e: etree._Element) -> bool:
    parent = e.getparent()
    while parent is not None:
        if parent.tag == "configuration":
            return True
        if parent.tag == "status":
            return False
        parent = parent.getparent()
    return False


@dataclass(frozen=True)
class Proc:
    at: float
    guest: str
    node: str
    pid: int
    incoming: bool


@dataclass(frozen=True)
class Health:
    at: float
    expected: bool      # the controller is meant to be running and not stopped
    ok: bool


@dataclass(frozen=True)
class Valid:
    at: float
    valid: bool | None  # kvm_warden_desired_state_valid on /metrics (None: not answered)


@dataclass(frozen=True)
class Usage:
    at: float
    pid: int
    rss_kb: int
    threads: int


@dataclass(frozen=True)
class Counts:
    at: float
    audit_lines: int
    history_rows: int | None    # None: the database could not be read at that instant
    ledger_ok: bool | None      # None: no ledger yet


@dataclass
class Samples:
    procs: list[list[Proc]] = field(default_factory=list)   # one list per /proc sample
    proc_times: list[float] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)
    valid: list[Valid] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    counts: list[Counts] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)      # controller (re)starts and resumes
    errors: list[tuple[float, str]] = field(default_factory=list)  # the sampler's own failures


# -- the invariants: pure functions of the samples -------------------------------------------

Found = list[tuple[float, str]]  # (when, what): a violation at a wall-clock instant


def twice(samples: Samples) -> Found:
    """No guest runs (not as a migration's -incoming target) on two nodes beyond
    OVERLAP_GRACE."""
    out: Found = []
    since: dict[str, float] = {}
    for at, procs in zip(samples.proc_times, samples.procs, strict=True):
        running: dict[str, set[str]] = {}
        for p in procs:
            if not p.incoming:
                running.setdefault(p.guest, set()).add(p.node)
        for guest in set(since) | set(running):
            nodes = running.get(guest, set())
            if len(nodes) < 2:
                since.pop(guest, None)
                continue
            start = since.setdefault(guest, at)
            if start != float("inf") and at - start > OVERLAP_GRACE:
                out.append((start, f"{guest} ran on {', '.join(sorted(nodes))} at once for "
                                   f"{at - start:.1f} s"))
                since[guest] = float("inf")
    return out


def restarts(samples: Samples, guests: Iterable[str]) -> tuple[Found, int]:
    """Every guest of `guests` runs all along, and every new qemu process of one is a live
    migration's target (`-incoming`): a guest with no process, or a process started cold, is a
    stop or a restart. Returns the violations and the number of live migrations seen."""
    out: Found = []
    known: dict[str, set[int]] = {}
    migrations = 0
    for at, procs in zip(samples.proc_times, samples.procs, strict=True):
        now: dict[str, set[int]] = {}
        for p in procs:
            now.setdefault(p.guest, set()).add(p.pid)
            if p.guest in known and p.pid not in known[p.guest]:
                if p.incoming:
                    migrations += 1
                else:
                    out.append((at, f"{p.guest} started cold on {p.node} (pid {p.pid})"))
        for guest in guests:
            if guest in known and not now.get(guest):
                out.append((at, f"{guest} had no qemu process"))
        for guest, pids in now.items():
            known[guest] = known.get(guest, set()) | pids
    return out, migrations


def _rounds(views: Sequence[View], width: float = 1.5) -> list[dict[str, View]]:
    """Views grouped into rounds: each node's latest view within `width` seconds."""
    out: list[dict[str, View]] = []
    current: dict[str, View] = {}
    start = None
    for v in sorted(views, key=lambda v: v.at):
        if start is None or v.at - start > width or v.node in current:
            if current:
                out.append(current)
            current, start = {}, v.at
        current[v.node] = v
    if current:
        out.append(current)
    return out


def _persisting(events: Iterable[tuple[float, str | None]], grace: float) -> Found:
    """Problems (a key per instant, None: none) that persisted beyond `grace` seconds."""
    out: Found = []
    since: dict[str, float] = {}
    reported: set[str] = set()
    for at, key in events:
        for k in [k for k in since if k != key]:
            del since[k]
            reported.discard(k)
        if key is None:
            continue
        start = since.setdefault(key, at)
        if at - start > grace and key not in reported:
            out.append((start, f"{key} for more than {at - start:.0f} s"))
            reported.add(key)
    return out


def one_dc_per_partition(views: Sequence[View]) -> Found:
    """Two nodes that see each other online agree on who is DC (after an election's grace)."""
    events: list[tuple[float, str | None]] = []
    for rnd in _rounds(views):
        key = None
        for a in sorted(rnd):
            for b in sorted(rnd):
                va, vb = rnd[a], rnd[b]
                if a < b and b in va.online and a in vb.online and va.dc and vb.dc \
                        and va.dc != vb.dc:
                    key = f"two DCs in one partition: {a} says {va.dc}, {b} says {vb.dc}"
        events.append((max(v.at for v in rnd.values()), key))
    return _persisting(events, SPLIT_GRACE)


def cib_agrees(views: Sequence[View], nodes: Sequence[str]) -> Found:
    """Once every node sees every node online under one DC, their CIBs have one version."""
    events: list[tuple[float, str | None]] = []
    for rnd in _rounds(views):
        key = None
        whole = len(rnd) == len(nodes) and all(v.online == frozenset(nodes) for v in rnd.values())
        dcs = {v.dc for v in rnd.values()}
        epochs = {v.epoch for v in rnd.values() if v.epoch is not None}
        if whole and len(dcs) == 1 and len(epochs) > 1:
            key = "the CIB differs between nodes: " + ", ".join(
                f"{n} {rnd[n].epoch}" for n in sorted(rnd))
        events.append((max(v.at for v in rnd.values()), key))
    return _persisting(events, AGREE_GRACE)


def multi_active(views: Sequence[View]) -> Found:
    out: Found = []
    for node in sorted({v.node for v in views}):
        mine = [v for v in views if v.node == node]
        for rsc in sorted({r for v in mine for r in v.multi_active}):
            out += _persisting(((v.at, f"{node} sees {rsc} active on several nodes"
                                 if rsc in v.multi_active else None) for v in mine), MULTI_GRACE)
    return out


def started_without_quorum(samples: Samples) -> Found:
    """A guest process that appears on a node whose own view, just before and just after,
    says it has no quorum: Pacemaker started it there (no-quorum-policy=freeze forbids it)."""
    out: Found = []
    seen: set[int] = set()
    by_node: dict[str, list[View]] = {}
    for v in samples.views:
        by_node.setdefault(v.node, []).append(v)
    for i, (at, procs) in enumerate(zip(samples.proc_times, samples.procs, strict=True)):
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            if i == 0 or p.incoming:
                continue
            around = [v for v in by_node.get(p.node, []) if at - 3.0 <= v.at <= at + 3.0]
            if around and all(not v.quorate for v in around):
                out.append((at, f"{p.guest} started on {p.node} while {p.node} had no "
                                "quorum"))
    return out


def epoch_s(rec: dict[str, object]) -> float:
    import datetime as dt

    return dt.datetime.strptime(str(rec["at"]), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC).timestamp()


def applied(records: Iterable[dict[str, object]], since: float) -> list[dict[str, object]]:
    return [r for r in records if r.get("outcome") == "applied" and epoch_s(r) >= since - 1]


def unsafe_changes(records: Sequence[dict[str, object]], views: Sequence[View],
                   controller_node: str, since: float) -> Found:
    """No change applied while, in the view of the controller's node, the cluster had no
    quorum, a node was unclean, fencing was pending or maintenance mode was on: each applied
    record judged by every view within a second of it (audit times are whole seconds)."""
    mine = [v for v in views if v.node == controller_node]
    out: Found = []
    for rec in applied(records, since):
        at = epoch_s(rec)
        around = [v for v in mine if at - 1.0 <= v.at <= at + 2.0]
        if around and all(v.unsafe for v in around):
            out.append((at, f"{rec.get('action')} applied while Pacemaker said "
                            f"{around[0].unsafe}"))
    return out


def unaudited_changes(records: Sequence[dict[str, object]], views: Sequence[View],
                      controller_node: str, since: float) -> Found:
    """Every warden-* constraint that appears in or leaves the CIB has an applied audit record
    that names it -- one that writes it (its `after`), or one that removes it -- within
    AUDIT_WINDOW seconds before the sample that shows the change; and so has every setting
    (an nvpair of the configuration: a property, a meta or node attribute) that changes. In
    the soak nobody else writes the configuration: the nemesis changes the desired file."""
    recs = [(epoch_s(r), str(r.get("after") or ""), r.get("kind") == "RemoveConstraint",
             " ".join(str(v) for v in r.values())) for r in applied(records, since)]
    mine = sorted((v for v in views if v.node == controller_node and v.epoch is not None),
                  key=lambda v: v.at)
    out: Found = []
    for prev, cur in zip(mine, mine[1:], strict=False):
        for rid in sorted(cur.owned ^ prev.owned):
            added = rid in cur.owned
            if not any(cur.at - AUDIT_WINDOW <= at <= cur.at + 2.0
                       and (rid in after if added else removes and rid in text)
                       for at, after, removes, text in recs):
                what = "added" if added else "removed"
                out.append((cur.at, f"{rid} {what} in the CIB with no audit record"))
        was, now = dict(prev.settings), dict(cur.settings)
        for nid in sorted(set(was) | set(now)):
            if was.get(nid) == now.get(nid):
                continue
            if not any(cur.at - AUDIT_WINDOW <= at <= cur.at + 2.0 and f'id="{nid}"' in text
                       for at, _, _, text in recs):
                out.append((cur.at, f"setting {nid}: {was.get(nid)} -> {now.get(nid)} in the "
                                    "CIB with no audit record"))
    return out


def health_truth(samples: Samples) -> Found:
    """/healthz answers ok whenever the controller should be healthy (after a grace following
    each start or resume), and never while it is stopped (it cannot: a lie would show here)."""
    out: Found = []
    streak: float | None = None
    for h in samples.health:
        if h.ok and not h.expected:
            out.append((h.at, "/healthz said ok while the controller was stopped"))
        recent = any(0 <= h.at - s <= HEALTH_GRACE for s in samples.starts)
        if h.expected and not h.ok and not recent:
            streak = h.at if streak is None else streak
            if h.at - streak > HEALTH_STREAK:
                out.append((streak, f"/healthz failed for {h.at - streak:.0f} s while the "
                                    "controller should be healthy"))
                streak = float("inf")
        else:
            streak = None
    return out


def says_invalid(samples: Samples, invalid: Sequence[tuple[float, float]],
                 within: float = 10.0) -> Found:
    """While the desired file is invalid on disk (from, to), /metrics says so within `within`
    seconds; once it is fixed, it says valid again within `within` seconds."""
    out: Found = []
    for start, end in invalid:
        during = [v for v in samples.valid if start + within <= v.at <= end and v.valid is not None]
        if any(v.valid for v in during):
            out.append((start, "/metrics said the desired file was valid while it was not"))
        after = [v for v in samples.valid if end + within <= v.at <= end + 3 * within
                 and v.valid is not None]
        if after and not any(v.valid for v in after):
            out.append((end, "/metrics still said the desired file was invalid once it was "
                             "fixed"))
    return out


def bounded_usage(samples: Samples) -> Found:
    """Per controller process: memory and threads after warm-up stay within bounds of their
    values at the end of warm-up."""
    out: Found = []
    for pid in sorted({u.pid for u in samples.usage}):
        mine = [u for u in samples.usage if u.pid == pid]
        base = [u for u in mine if u.at - mine[0].at >= RSS_WARMUP]
        if len(base) < 2:
            continue
        b = base[0]
        top_rss = max(u.rss_kb for u in base)
        top_threads = max(u.threads for u in base)
        if top_rss > b.rss_kb * RSS_FACTOR + RSS_SLACK_KB:
            out.append((b.at, f"controller {pid}: RSS grew from {b.rss_kb} kB to {top_rss} kB"))
        if top_threads > b.threads + THREAD_SLACK:
            out.append((b.at, f"controller {pid}: threads grew from {b.threads} to "
                              f"{top_threads}"))
    return out


def nothing_lost(samples: Samples) -> Found:
    """Audit lines and history rows never go backwards; a ledger, once written, always
    parses."""
    out: Found = []
    best_audit, best_rows, was_ok = 0, 0, True
    for c in samples.counts:
        if c.audit_lines < best_audit:
            out.append((c.at, f"audit records went from {best_audit} to {c.audit_lines}"))
            best_audit = c.audit_lines
        best_audit = max(best_audit, c.audit_lines)
        if c.history_rows is not None:
            if c.history_rows < best_rows:
                out.append((c.at, f"history rows went from {best_rows} to {c.history_rows}"))
                best_rows = c.history_rows
            best_rows = max(best_rows, c.history_rows)
        if c.ledger_ok is False and was_ok:
            out.append((c.at, "the ledger did not parse"))
        was_ok = c.ledger_ok is not False
    return out


def in_history(touched: Sequence[tuple[float, str]], rows: Sequence[tuple[float, str]],
               within: float = 180.0) -> Found:
    """Every VM a fault touched (at, vm) has a history event within `within` s after it."""
    return [(at, f"{vm}: no history event after the fault") for at, vm in touched
            if not any(vm in (v, f"vm-{v}", v.removeprefix("vm-")) and at - 1 <= t <= at + within
                       for t, v in rows)]


# -- sampling (I/O) ---------------------------------------------------------------------------

def qemu_incoming(pid: int) -> bool:
    try:
        return b"-incoming" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def node_view(node: str) -> View | None:
    at = time.time()
    try:
        mon = lab.on(node, "crm_mon", "-1", "--output-as=xml", check=False, timeout=15)
        if mon.returncode != 0 or not mon.stdout.strip():
            return None
        cib = lab.on(node, "cibadmin", "--query", "--local", check=False, timeout=15)
    except (OSError, ValueError, lab.subprocess.SubprocessError):
        return None  # the node is down or booting: it has no view
    return parse_view(node, at, mon.stdout, cib.stdout if cib.returncode == 0 else None)


def desired_valid() -> bool | None:
    try:
        text = lab.warden_get("/metrics")
    except Exception:  # noqa: BLE001 - no answer is no sample
        return None
    for line in text.splitlines():
        if line.startswith("kvm_warden_desired_state_valid "):
            return float(line.split()[1]) == 1.0
    return None


def process_usage(pid: int) -> tuple[int, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie (killed, not reaped yet) has no memory to report
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def audit_records(state: Path) -> list[dict[str, object]]:
    """Every audit record that parses, oldest first (audit.jsonl.5 ... audit.jsonl)."""
    out = []
    for p in sorted(state.glob("audit.jsonl*"), reverse=True):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        for line in data.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def state_counts(state: Path) -> tuple[int, int | None, bool | None]:
    """(audit records, history rows, the ledger parses) of a state directory, read directly:
    an audit line counts only if it parses (a torn write must not hide a record)."""
    lines = len(audit_records(state))
    rows = None
    with history_copy(state) as db:
        if db is not None:
            try:
                with contextlib.closing(sqlite3.connect(db, timeout=2)) as con:
                    rows = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
            except sqlite3.Error:
                rows = None
    ledger: bool | None = None
    try:
        json.loads((state / "ledger.json").read_text())
        ledger = True
    except FileNotFoundError:
        ledger = None
    except (OSError, ValueError):
        ledger = False
    return lines, rows, ledger


@contextlib.contextmanager
def history_copy(state: Path) -> Iterator[Path | None]:
    """A copy of the history database (and its write-ahead log) to read. The state directory
    is in kvm1's mount namespace, reached through /proc/PID/root, and sqlite resolves that link
    to a path of the host's namespace, where the file is not: so read a copy."""
    src = state / "history.sqlite"
    with tempfile.TemporaryDirectory(prefix="soak-history-") as tmp:
        try:
            shutil.copyfile(src, Path(tmp) / src.name)
        except OSError:
            yield None
            return
        for suffix in ("-wal",):
            try:
                shutil.copyfile(f"{src}{suffix}", Path(tmp) / f"{src.name}{suffix}")
            except OSError:
                pass
        yield Path(tmp) / src.name


def history_rows(state: Path) -> list[tuple[float, str]]:
    with history_copy(state) as db:
        if db is None:
            return []
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
                return [(float(at), str(vm)) for at, vm in
                        con.execute("SELECT at, vm FROM events WHERE vm IS NOT NULL")]
        except sqlite3.Error:
            return []


class Sampler:
    """The sampling threads. `controller()` says (pid or None, expected healthy)."""

    def __init__(self, state: Path, controller: Callable[[], tuple[int | None, bool]]):
        self.samples = Samples()
        self.state = state
        self.controller = controller
        self._stop = threading.Event()
        self._ids = lab.netns_ids()
        self._threads = [threading.Thread(target=self._every, args=(0.2, self._procs), daemon=True),
                         threading.Thread(target=self._every, args=(1.0, self._controller),
                                          daemon=True),
                         *(threading.Thread(target=self._every, args=(1.0, self._node, n),
                                            daemon=True) for n in lab.NODES)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(timeout=30)

    def _every(self, interval: float, step: Callable[..., None], *args: str) -> None:
        """Run `step` every `interval` until stopped. A sampler that dies would blind the
        checker for the rest of the run without a word: a failed step is a missed sample
        (a lab in turmoil: a timed-out tool, a vanished process) or, if the sampler itself is
        at fault, an error the judge reports as a violation."""
        while not self._stop.wait(interval):
            try:
                step(*args)
            except (OSError, subprocess.SubprocessError):
                continue
            except Exception:  # noqa: BLE001 - recorded and judged, the sampling goes on
                self.samples.errors.append((time.time(), traceback.format_exc(limit=4)))

    def _procs(self) -> None:
        at = time.time()
        seen = lab.guest_processes(self._ids)
        self.samples.procs.append([Proc(at, g, n, pid, qemu_incoming(pid))
                                   for g, procs in seen.items() for n, pid in procs])
        self.samples.proc_times.append(at)

    def _node(self, node: str) -> None:
        view = node_view(node)
        if view is not None:
            self.samples.views.append(view)

    def _controller(self) -> None:
        pid, expected = self.controller()
        try:
            ok = lab.warden_get("/healthz").strip() == "ok"
        except Exception:  # noqa: BLE001 - an unreachable port is a failed answer
            ok = False
        at = time.time()
        if self.controller()[1] == expected:  # not stopped or resumed meanwhile
            self.samples.health.append(Health(at, expected, ok))
        if expected:
            self.samples.valid.append(Valid(at, desired_valid()))
        usage = process_usage(pid) if pid else None
        if usage:
            self.samples.usage.append(Usage(at, pid or 0, *usage))
        self.samples.counts.append(Counts(at, *state_counts(self.state)))
