"""A seeded nemesis on the 3-node lab, and a checker that does not use kvm-warden's code to
judge kvm-warden.

    python -m lab.chaos [--minutes 60] [--seed N] [--faults KIND,...] [--json]   (make soak)

The nemesis injects one fault at a time, at random (seeded) moments, each healed after a random
hold; the cluster is sometimes given time to settle and sometimes not. The checker samples, from
the host, every node's qemu processes in /proc (guest name, node by network namespace, and
whether it is a migration's `-incoming` target) several times a second, Pacemaker's view from
kvm1 once a second (`crm_mon --output-as=xml`: quorum, unclean nodes), and at the end reads
kvm-warden's audit log. Over the whole run it checks:

- no guest runs on two nodes at once (beyond the instant of a live migration's switch-over);
- no change was applied by kvm-warden while its partition had no quorum or a node was unclean;
- the controller's /healthz answered whenever the controller was meant to run;
- after the last fault, the cluster converges to the desired placement.

Faults (--faults): kill-guest (SIGKILL of a qemu), suspend (virsh suspend behind the cluster's
back, resumed later), partition (kvm2's or kvm3's link down; real fencing follows),
kill-node (every process of kvm2 or kvm3, restarted later), desired-edit (web01/web02 moved in
the desired file), kill-controller (SIGKILL, restarted later). The controller runs on kvm1,
which is therefore never the node taken down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from lab import lab

FAULTS = ("kill-guest", "suspend", "partition", "kill-node", "desired-edit", "kill-controller")
OVERLAP_GRACE = 2.0  # seconds a guest may show on two nodes (a live migration's switch-over)
SETTLE_SECONDS = 240.0
PLACES = {"web01": ("kvm1", "kvm2"), "web02": ("kvm2", "kvm3")}


@dataclass
class Report:
    seed: int
    minutes: float
    faults: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    pacemaker_samples: int = 0
    health_failures: int = 0
    converged_after_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def qemu_incoming(pid: int) -> bool:
    try:
        return b"-incoming" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def pacemaker_view() -> tuple[bool, list[str]] | None:
    """(quorate, unclean nodes) as kvm1's crm_mon says, or None when it cannot say."""
    out = lab.on("kvm1", "crm_mon", "-1", "--output-as=xml", check=False, timeout=15)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    try:
        root = etree.fromstring(out.stdout.encode(),
                                parser=etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError:
        return None
    dc = root.find("summary/current_dc")
    quorate = dc is not None and dc.get("with_quorum") == "true"
    unclean = [str(n.get("name")) for n in root.iter("node") if n.get("unclean") == "true"]
    return quorate, unclean


class Checker:
    """The independent judge: samples the host's /proc and kvm1's crm_mon on its own threads."""

    def __init__(self, report: Report, controller_up: Callable[[], bool]):
        self.report = report
        self.controller_up = controller_up
        self.pacemaker: list[tuple[float, bool, list[str]]] = []  # (wall clock, quorate, unclean)
        self._twice = Twice()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._procs, daemon=True),
                         threading.Thread(target=self._cluster, daemon=True)]
        self._ids = lab.netns_ids()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _procs(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            self.report.samples += 1
            seen = lab.guest_processes(self._ids)
            for guest in set(seen) | set(self._twice.since):
                running = sorted({n for n, pid in seen.get(guest, []) if not qemu_incoming(pid)})
                problem = self._twice.see(now, guest, running)
                if problem:
                    self.report.violations.append(problem)

    def _cluster(self) -> None:
        while not self._stop.wait(1.0):
            view = pacemaker_view()
            if view is not None:
                self.pacemaker.append((time.time(), *view))
                self.report.pacemaker_samples += 1
            if self.controller_up():
                try:
                    ok = lab.warden_get("/healthz").strip() == "ok"
                except Exception:  # noqa: BLE001 - an unreachable port is a failed answer
                    ok = False
                if not ok:
                    self.report.health_failures += 1

    def audit(self, since: float) -> None:
        self.report.violations += unsafe_changes(lab.audit_records(), self.pacemaker, since)


class Twice:
    """Guests seen running (not as a migration's -incoming target) on two nodes, over time."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}

    def see(self, now: float, guest: str, running: list[str]) -> str | None:
        """A violation once the overlap outlasts OVERLAP_GRACE (reported once per episode)."""
        if len(running) < 2:
            self.since.pop(guest, None)
            return None
        since = self.since.setdefault(guest, now)
        if now - since <= OVERLAP_GRACE:
            return None
        self.since[guest] = float("inf")
        return f"{guest} ran on {', '.join(running)} at once for {now - since:.1f} s"


def unsafe_changes(records: list[dict[str, object]],
                   pacemaker: list[tuple[float, bool, list[str]]], since: float) -> list[str]:
    """No change applied while the partition had no quorum or a node was unclean: each
    applied record is judged by Pacemaker's own view in the second it was sent."""
    out = []
    for rec in records:
        if rec.get("event") != "audit" or rec.get("outcome") != "applied":
            continue
        at = dt.datetime.strptime(str(rec["at"]), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC).timestamp()
        if at < since:
            continue
        around = [(q, u) for t, q, u in pacemaker if at - 1.0 <= t <= at + 1.0]
        if around and all(not q or u for q, u in around):
            why = "no quorum" if not around[0][0] else "unclean: " + ", ".join(around[0][1])
            out.append(f"{rec.get('action')} applied at {rec['at']} while Pacemaker said {why}")
    return out


class Nemesis:
    def __init__(self, desired: Path, rng: random.Random, report: Report):
        self.desired, self.rng, self.report = desired, rng, report
        self.places = {"web01": "kvm1", "web02": "kvm2"}
        self.controller_running = True

    def write_desired(self) -> None:
        self.desired.write_text(lab.E2E_DESIRED.format(
            web01=self.places["web01"], web02=self.places["web02"],
            nodes="[kvm1, kvm2, kvm3]", db01="", policy=""))

    def inject(self, kind: str) -> Callable[[], None]:
        """Start a fault; return what heals it."""
        self.report.faults[kind] = self.report.faults.get(kind, 0) + 1
        rng = self.rng
        if kind == "kill-guest":
            procs = lab.guest_processes()
            if procs:
                guest = rng.choice(sorted(procs))
                for _, pid in procs[guest]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            return lambda: None  # Pacemaker's monitor finds it and recovers it
        if kind == "suspend":
            placed = lab.vms_running()
            vm, nodes = rng.choice(sorted(placed.items())) if placed else ("", [])
            if not nodes:
                return lambda: None
            domain, node = vm.removeprefix("vm-"), nodes[0]
            lab.on(node, "virsh", "-c", "qemu:///system", "suspend", domain, check=False)

            def resume() -> None:
                lab.on(node, "virsh", "-c", "qemu:///system", "resume", domain, check=False)

            return resume
        if kind == "partition":
            node = rng.choice(("kvm2", "kvm3"))
            lab.set_link(node, False)
            return lambda: lab.set_link(node, True)
        if kind == "kill-node":
            node = rng.choice(("kvm2", "kvm3"))
            lab.kill_node(node)
            return lambda: lab.restart_node(node)
        if kind == "desired-edit":
            vm = rng.choice(sorted(PLACES))
            self.places[vm] = rng.choice([n for n in PLACES[vm] if n != self.places[vm]])
            if self.places["web01"] == self.places["web02"]:  # anti-affinity: keep it possible
                self.places["web02"] = next(n for n in PLACES["web02"]
                                            if n != self.places["web01"])
            self.write_desired()
            return lambda: None
        if kind == "kill-controller":
            for pid in lab.node_pids("kvm1", "controller.app.cli controller"):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.controller_running = False

            def restart() -> None:
                lab.start_controller(self.desired)
                self.controller_running = True

            return restart
        raise ValueError(f"unknown fault {kind}")


def converged(places: dict[str, str]) -> bool:
    placed = lab.vms_running()
    return placed.get("vm-web01") == [places["web01"]] and \
        placed.get("vm-web02") == [places["web02"]] and len(placed.get("vm-db01", [])) == 1 and \
        lab.nodes_online() == list(lab.NODES) and set(lab.vm_roles().values()) == {"Started"}


def run(desired: Path, minutes: float, seed: int, faults: tuple[str, ...]) -> Report:
    """The soak on a running lab with kvm-warden (lab.up + lab.start_warden)."""
    rng = random.Random(seed)
    report = Report(seed=seed, minutes=minutes)
    nemesis = Nemesis(desired, rng, report)
    nemesis.write_desired()
    checker = Checker(report, lambda: nemesis.controller_running)
    started = time.time()
    checker.start()
    try:
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            heal = nemesis.inject(rng.choice(faults))
            time.sleep(rng.uniform(3.0, 15.0))  # the fault's hold
            heal()
            # Sometimes the next fault comes before the cluster has settled.
            if rng.random() < 0.7:
                t = time.monotonic()
                while time.monotonic() - t < 60 and not converged(nemesis.places):
                    time.sleep(1.0)
            time.sleep(rng.uniform(0.0, 5.0))
        t = time.monotonic()
        while time.monotonic() - t < SETTLE_SECONDS:
            if converged(nemesis.places):
                report.converged_after_s = round(time.monotonic() - t, 1)
                break
            time.sleep(1.0)
        if report.converged_after_s is None:
            report.violations.append(f"not converged {SETTLE_SECONDS:.0f} s after the last "
                                     f"fault: {lab.vms_running()}")
    finally:
        checker.stop()
    checker.audit(started)
    return report


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m lab.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated, of: {', '.join(FAULTS)}")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = p.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    lab.up()
    desired = lab.BASE / "soak-desired.yaml"
    nemesis = Nemesis(desired, random.Random(args.seed), Report(args.seed, args.minutes))
    nemesis.write_desired()
    lab.start_warden(desired)
    try:
        report = run(desired, args.minutes, args.seed, faults)
    finally:
        if not args.keep:
            lab.down()
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"soak: seed {report.seed}, {report.minutes:g} min, faults {report.faults}, "
              f"{report.samples} /proc samples, {report.pacemaker_samples} crm_mon samples, "
              f"{report.health_failures} failed /healthz, converged after "
              f"{report.converged_after_s} s")
        for v in report.violations:
            print(f"  VIOLATION: {v}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
