"""A seeded nemesis on the 3-node lab, judged by a checker that does not use kvm-warden's code
(lab/checker.py), with a report (lab/soak_report.py: JSON and a self-contained HTML page).

    python -m lab.chaos [--minutes 60] [--seed N] [--faults KIND,...] [--out DIR]  (make soak)

The nemesis injects one fault at a time at seeded random moments, each healed after a random
hold. Most of the time it then waits for the cluster to converge to the desired file (the
recovery time is measured, and a bound applies); sometimes it does not wait, so faults overlap
a recovery. The first faults of a run are every kind once, in a seeded order, so a short run
still covers them all. The controller runs on kvm1, which is therefore never the node taken
down; its state directory is a small tmpfs, so that the disk can be filled.

Kinds (--faults):
  kill-guest      SIGKILL of a guest's qemu           destroy   `virsh destroy` behind the cluster
  suspend         `virsh suspend`, resumed later       partition kvm2's or kvm3's link down
  asym-partition  a node hears nothing (iptables INPUT drop in its namespace), it still sends
  kill-node       every process of a node, booted again later
  kill-libvirtd / kill-corosync / kill-controld   SIGKILL of that daemon on kvm2 or kvm3
  fence-fail      the power controller fails (fencing cannot succeed) while a node is cut off
  kill-controller SIGKILL of kvm-warden's controller, started again later
  stop-controller SIGSTOP of the controller for longer than its health bound, then SIGCONT
  kill-agent      SIGKILL of a node's kvm-warden agent, started again later
  desired-edit    web01/web02 moved      desired-drain   kvm3 drained (standby), then lifted
  desired-stop    db01 set stopped, then running      desired-invalid  an invalid file, then fixed
  state-full      the controller's state directory filled up, then freed
  other-release   kvm2 or kvm3 stopped cleanly and restarted on the other Debian release (its
                  own /usr and /etc, kvm-warden from that release's package: a rolling
                  upgrade's step, or its rollback), then restarted on this machine's again
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import checker, lab

FAULTS = ("kill-guest", "destroy", "suspend", "partition", "asym-partition", "kill-node",
          "kill-libvirtd", "kill-corosync", "kill-controld", "fence-fail", "kill-controller",
          "stop-controller", "kill-agent", "desired-edit", "desired-drain", "desired-stop",
          "desired-invalid", "state-full", "other-release")
# Faults that certainly touch the VMs they name: each must show in kvm-warden's history.
TOUCHING = ("kill-guest", "destroy", "suspend", "kill-node", "partition", "asym-partition")
HOLDS = {"stop-controller": (35.0, 45.0), "fence-fail": (20.0, 35.0),
         "state-full": (10.0, 30.0), "other-release": (20.0, 40.0)}  # seconds; others 3-15 s
RECOVERY_BOUND = 240.0  # s from a heal to convergence when the nemesis waits for it
SETTLE_SECONDS = 300.0
PLACES = {"web01": ("kvm1", "kvm2"), "web02": ("kvm2", "kvm3")}
VICTIMS = ("kvm2", "kvm3")  # kvm1 runs the controller
STATE_MB = 48
CONTROLLER = lab.CONTROLLER
LIBVIRTD, COROSYNC = "^libvirtd( |$)", "^corosync( |$)"  # not corosync-quorumtool


@dataclass
class Fault:
    kind: str
    target: str
    at: float
    vms: list[str] = field(default_factory=list)
    healed: float | None = None
    converged: float | None = None    # None: not waited for, or not within the bound
    waited: bool = False

    @property
    def recovery_s(self) -> float | None:
        """From the heal to convergence."""
        if self.converged is None or self.healed is None:
            return None
        return round(self.converged - self.healed, 1)

    @property
    def outage_s(self) -> float | None:
        """From the fault to convergence."""
        return None if self.converged is None else round(self.converged - self.at, 1)


@dataclass
class Report:
    seed: int
    minutes: float
    started: float = 0.0
    ended: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    violations: list[tuple[float, str]] = field(default_factory=list)
    samples: checker.Samples = field(default_factory=checker.Samples)
    converged_after_s: float | None = None
    unverified: list[str] = field(default_factory=list)  # what could not be judged, and why
    applied: list[float] = field(default_factory=list)   # when kvm-warden applied a change

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out


class Desired:
    """What the nemesis asks for, written as the e2e scenarios' desired file."""

    def __init__(self, path: Path):
        self.path = path
        self.places = {"web01": "kvm1", "web02": "kvm2"}
        self.drained: str | None = None
        self.lifted: str | None = None  # a drain lifted: declared online (docs/reference.md, "Node drain")
        self.db01_stopped = False

    def write(self) -> None:
        def entry(n: str) -> str:
            if n == self.drained:
                return f"{{name: {n}, state: standby}}"
            return f"{{name: {n}, state: online}}" if n == self.lifted else n
        nodes = "[" + ", ".join(entry(n) for n in lab.NODES) + "]"
        self.path.write_text(lab.E2E_DESIRED.format(
            web01=self.places["web01"], web02=self.places["web02"], nodes=nodes,
            db01="    state: stopped\n" if self.db01_stopped else "", policy=""))

    def converged(self) -> bool:
        placed, roles = lab.vms_running(), lab.vm_roles()
        if placed.get("vm-web01") != [self.places["web01"]] or \
                placed.get("vm-web02") != [self.places["web02"]]:
            return False
        if self.db01_stopped:
            if "vm-db01" in placed or roles.get("vm-db01") != "Stopped":
                return False
        elif len(placed.get("vm-db01", [])) != 1:
            return False
        if self.drained and any(self.drained in nodes for nodes in placed.values()):
            return False
        return lab.nodes_online() == list(lab.NODES) and all(
            role == "Started" for rsc, role in roles.items()
            if not (rsc == "vm-db01" and self.db01_stopped))


def _kill(pids: list[str] | list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(int(pid), sig)
        except ProcessLookupError:
            pass


def _netns(node: str, *argv: str) -> None:
    lab.sh("ip", "netns", "exec", node, *argv, check=False)


class Controller:
    """kvm-warden's controller on kvm1, on the soak's own state directory (a small tmpfs)."""

    def __init__(self, desired: Path):
        self.desired = desired
        self.state = "running"   # running | killed | stopped
        self.starts: list[float] = []

    @staticmethod
    def pids() -> list[str]:
        return lab.node_pids("kvm1", CONTROLLER)

    def pid(self) -> int | None:
        pids = self.pids()
        return int(pids[0]) if pids else None

    def expected(self) -> tuple[int | None, bool]:
        return self.pid(), self.state == "running"

    def start(self) -> None:
        lab.start_controller(self.desired, state_dir=SOAK_STATE)
        self.state = "running"
        self.starts.append(time.time())


SOAK_STATE = lab.BASE / "soak-state"


def state_tmpfs() -> Path:
    """Mount a fresh small tmpfs on the soak's state directory in kvm1's mount namespace (where
    the controller runs); return the path under which the host reads it."""
    SOAK_STATE.mkdir(parents=True, exist_ok=True)
    lab.on("kvm1", "sh", "-c", f"if mountpoint -q {SOAK_STATE}; then umount -l {SOAK_STATE}; "
           f"fi; mount -t tmpfs -o size={STATE_MB}m,mode=0700 tmpfs {SOAK_STATE}")
    return Path(f"/proc/{lab.node_pid('kvm1')}/root") / SOAK_STATE.relative_to("/")


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it."""
    filler = directory / "soak-filler"
    block = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    return filler


class Nemesis:
    def __init__(self, desired: Desired, ctl: Controller, state: Path, rng: random.Random,
                 report: Report):
        self.desired, self.ctl, self.state, self.rng, self.report = \
            desired, ctl, state, rng, report

    def inject(self, kind: str) -> Callable[[], None]:
        """Start a fault (recorded in the report); return what heals it."""
        fault = Fault(kind, "", time.time())
        self.report.faults.append(fault)
        heal = getattr(self, "_" + kind.replace("-", "_"))(fault)
        say(self.report, f"{kind} {fault.target}")
        return heal  # type: ignore[no-any-return]

    def _guest(self, fault: Fault) -> tuple[str, list[tuple[str, int]]] | None:
        procs = lab.guest_processes()
        if not procs:
            return None
        guest = self.rng.choice(sorted(procs))
        fault.target, fault.vms = guest, [guest]
        return guest, procs[guest]

    def _node(self, fault: Fault) -> str:
        node = self.rng.choice(VICTIMS)
        fault.target = node
        fault.vms = sorted(g for g, procs in lab.guest_processes().items()
                           if any(n == node for n, _ in procs))
        return node

    def _kill_guest(self, fault: Fault) -> Callable[[], None]:
        found = self._guest(fault)
        if found:
            _kill([pid for _, pid in found[1]])
        return lambda: None  # Pacemaker's monitor finds it and recovers it

    def _virsh(self, fault: Fault, verb: str) -> tuple[str, str] | None:
        found = self._guest(fault)
        if not found:
            return None
        guest, node = found[0], found[1][0][0]
        fault.target = f"{guest} on {node}"
        lab.on(node, "virsh", "-c", "qemu:///system", verb, guest, check=False)
        return guest, node

    def _destroy(self, fault: Fault) -> Callable[[], None]:
        self._virsh(fault, "destroy")
        return lambda: None

    def _suspend(self, fault: Fault) -> Callable[[], None]:
        found = self._virsh(fault, "suspend")
        if not found:
            return lambda: None
        guest, node = found

        def resume() -> None:
            lab.on(node, "virsh", "-c", "qemu:///system", "resume", guest, check=False)
        return resume

    def _partition(self, fault: Fault) -> Callable[[], None]:
        node = self._node(fault)
        lab.set_link(node, False)
        return lambda: lab.set_link(node, True)

    def _asym_partition(self, fault: Fault) -> Callable[[], None]:
        node = self._node(fault)
        _netns(node, "iptables", "-I", "INPUT", "-i", "eth0", "-j", "DROP")
        return lambda: _netns(node, "iptables", "-D", "INPUT", "-i", "eth0", "-j", "DROP")

    def _other_release(self, fault: Fault) -> Callable[[], None]:
        """A node restarted on the other release, as in a rolling upgrade (its VMs leave it
        live when its Pacemaker stops); healed by restarting it on the release it ran."""
        node = self._node(fault)
        was = lab.node_release(node)  # this machine's, or the other's on a lab of that one
        other = "13" if was == "12" else "12"
        fault.target = f"{node} on Debian {other}"
        lab.upgrade_node(node, other)
        return lambda: lab.upgrade_node(node, was)

    def _kill_node(self, fault: Fault) -> Callable[[], None]:
        node = self._node(fault)
        lab.kill_node(node)
        # Boot it unless fencing (the power controller's `on`) already did: a node booted
        # meanwhile is not killed again.
        return lambda: lab.start_node(node)

    def _daemon(self, fault: Fault, pattern: str) -> str:
        node = self._node(fault)
        fault.vms = []  # whether the VMs are touched is Pacemaker's call (often: fencing)
        _kill(lab.node_pids(node, pattern))
        return node

    def _whole(self, node: str, daemon: str) -> None:
        """Heal: a node whose daemon is still gone (Pacemaker did not fence it) is rebooted."""
        if lab.netns_pids(node) and not lab.node_pids(node, daemon):
            lab.restart_node(node)

    def _kill_libvirtd(self, fault: Fault) -> Callable[[], None]:
        node = self._daemon(fault, LIBVIRTD)

        def heal() -> None:
            if lab.node_pids(node, "pacemakerd") and not lab.node_pids(node, LIBVIRTD):
                lab.on(node, "libvirtd", "--listen", "-d", check=False)
        return heal

    def _kill_corosync(self, fault: Fault) -> Callable[[], None]:
        node = self._daemon(fault, COROSYNC)
        return lambda: self._whole(node, COROSYNC)

    def _kill_controld(self, fault: Fault) -> Callable[[], None]:
        node = self._daemon(fault, "pacemaker-controld")
        return lambda: self._whole(node, "pacemaker-controld")  # pacemakerd respawns it

    def _fence_fail(self, fault: Fault) -> Callable[[], None]:
        node = self._node(fault)
        (lab.BASE / "bmc-fail").touch()
        lab.set_link(node, False)

        def heal() -> None:
            (lab.BASE / "bmc-fail").unlink(missing_ok=True)  # fencing can succeed again
            time.sleep(5.0)
            lab.set_link(node, True)
        return heal

    def _kill_controller(self, fault: Fault) -> Callable[[], None]:
        fault.target = "kvm1"
        _kill(self.ctl.pids())
        self.ctl.state = "killed"
        return self.ctl.start

    def _stop_controller(self, fault: Fault) -> Callable[[], None]:
        fault.target = "kvm1"
        pids = self.ctl.pids()
        _kill(pids, signal.SIGSTOP)
        self.ctl.state = "stopped"

        def heal() -> None:
            _kill(pids, signal.SIGCONT)
            self.ctl.state = "running"
            self.ctl.starts.append(time.time())
        return heal

    def _kill_agent(self, fault: Fault) -> Callable[[], None]:
        node = self.rng.choice(lab.NODES)
        fault.target = node
        pattern = f"controller.app.cli agent --node {node}"
        _kill(lab.node_pids(node, pattern))

        def heal() -> None:
            if lab.node_pids(node, "pacemakerd") and not lab.node_pids(node, pattern):
                lab.start_agent(node)
        return heal

    def _desired_edit(self, fault: Fault) -> Callable[[], None]:
        d = self.desired
        vm = self.rng.choice(sorted(PLACES))
        allowed = [n for n in PLACES[vm] if n != d.places[vm] and n != d.drained]
        if allowed:
            d.places[vm] = allowed[0]
        if d.places["web01"] == d.places["web02"]:  # anti-affinity: keep it possible
            d.places["web02"] = next(n for n in PLACES["web02"] if n != d.places["web01"])
        fault.target = f"{vm} -> {d.places[vm]}"
        d.write()
        return lambda: None

    def _desired_drain(self, fault: Fault) -> Callable[[], None]:
        d = self.desired
        fault.target = "kvm3"
        d.drained, d.lifted, d.places = "kvm3", None, {"web01": "kvm1", "web02": "kvm2"}
        d.write()

        def heal() -> None:
            d.drained, d.lifted = None, "kvm3"
            d.write()
        return heal

    def _desired_stop(self, fault: Fault) -> Callable[[], None]:
        d = self.desired
        fault.target = "db01"
        d.db01_stopped = True
        d.write()

        def heal() -> None:
            d.db01_stopped = False
            d.write()
        return heal

    def _desired_invalid(self, fault: Fault) -> Callable[[], None]:
        bad = self.rng.choice((
            "version: 1\nvms:\n  - name: web01\n    placement: {prefer: [kvm1\n",  # YAML
            "version: 1\nvms:\n  - name: web01\n    state: sideways\n",               # schema
        ))
        fault.target = "syntax" if "[kvm1" in bad else "schema"
        self.desired.path.write_text(bad)
        return self.desired.write

    def _state_full(self, fault: Fault) -> Callable[[], None]:
        """The state directory full, and then something for kvm-warden to do: a move."""
        filler = fill(self.state)
        self._desired_edit(fault)
        fault.target = f"full, then {fault.target}"
        return lambda: filler.unlink(missing_ok=True)


def say(report: Report, what: str) -> None:
    """Progress on stderr (the report is the result)."""
    print(f"soak t={time.time() - report.started:6.0f}s {what}", file=sys.stderr, flush=True)


def schedule(rng: random.Random, faults: tuple[str, ...]) -> Callable[[int], str]:
    """The i-th fault's kind: every kind once in a seeded order, then at random."""
    first = list(faults)
    rng.shuffle(first)
    return lambda i: first[i] if i < len(first) else rng.choice(faults)


STABLE_SECONDS = 3.0  # converged twice this far apart: not a view Pacemaker has yet to update


def wait_converged(desired: Desired, bound: float) -> float | None:
    """When the cluster converged (and stayed so for STABLE_SECONDS), or None within `bound`."""
    start = time.monotonic()
    since: float | None = None
    while time.monotonic() - start < bound:
        try:
            ok = desired.converged()
        except (OSError, subprocess.SubprocessError, ValueError):
            ok = False
        if not ok:
            since = None
        elif since is None:
            since = time.time()
        elif time.time() - since >= STABLE_SECONDS:
            return since
        time.sleep(1.0)
    return None


def run(desired_path: Path, minutes: float, seed: int, faults: tuple[str, ...]) -> Report:
    """The soak on a running lab with kvm-warden's agents (lab.up + lab.start_warden): the
    controller is restarted on the soak's own state directory, and put back on the lab's at
    the end."""
    rng = random.Random(seed)
    report = Report(seed=seed, minutes=minutes, started=time.time())
    desired = Desired(desired_path)
    desired.write()
    _kill(Controller.pids())
    state = state_tmpfs()
    ctl = Controller(desired_path)
    ctl.start()
    sampler = checker.Sampler(state, ctl.expected)
    report.samples = sampler.samples
    report.samples.starts = ctl.starts
    nemesis = Nemesis(desired, ctl, state, rng, report)
    kind_of = schedule(rng, faults)
    sampler.start()
    try:
        wait_converged(desired, RECOVERY_BOUND)
        deadline = time.monotonic() + minutes * 60
        i = 0
        while time.monotonic() < deadline or i < len(faults):
            kind = kind_of(i)
            i += 1
            heal = nemesis.inject(kind)
            time.sleep(rng.uniform(*HOLDS.get(kind, (3.0, 15.0))))
            heal()
            fault = report.faults[-1]
            fault.healed = time.time()
            if rng.random() < 0.8:
                fault.waited = True
                fault.converged = wait_converged(desired, RECOVERY_BOUND)
                say(report, f"  converged {fault.recovery_s} s after the heal")
                if fault.converged is None:
                    report.violations.append((fault.healed, f"not converged {RECOVERY_BOUND:.0f}"
                                              f" s after {kind} ({fault.target}) healed: "
                                              f"{lab.vms_running()}"))
            time.sleep(rng.uniform(0.0, 5.0))
        last = time.monotonic()
        if wait_converged(desired, SETTLE_SECONDS) is not None:
            report.converged_after_s = round(time.monotonic() - last, 1)
        else:
            report.violations.append((time.time(), f"not converged {SETTLE_SECONDS:.0f} s after"
                                      f" the last fault: {lab.vms_running()}"))
    finally:
        sampler.stop()
        report.ended = time.time()
    _kill(Controller.pids(), signal.SIGCONT)
    _kill(Controller.pids())
    judge(report, state)  # on files nobody writes any more
    lab.start_controller(desired_path)  # back on the lab's own state directory
    return report


def judge(report: Report, state: Path) -> None:
    """Every invariant over the whole run, in the checker's terms."""
    s, since = report.samples, report.started
    records = checker.audit_records(state)
    report.applied = [checker.epoch_s(r) for r in checker.applied(records, since)]
    found = (checker.twice(s) + checker.one_dc_per_partition(s.views)
             + checker.cib_agrees(s.views, lab.NODES) + checker.multi_active(s.views)
             + checker.started_without_quorum(s)
             + checker.unsafe_changes(records, s.views, "kvm1", since)
             + checker.unaudited_changes(records, s.views, "kvm1", since)
             + checker.health_truth(s) + checker.bounded_usage(s) + checker.nothing_lost(s)
             + checker.says_invalid(s, [(f.at, f.healed) for f in report.faults
                                        if f.kind == "desired-invalid" and f.healed
                                        and not controller_down(report, f.at, f.healed)])
             + [(at, f"the checker's sampler failed: {tb}") for at, tb in s.errors])
    touched, skipped = [], 0
    for f in report.faults:
        if f.kind not in TOUCHING:
            continue
        if controller_down(report, f.at - 5, f.at + 30):
            skipped += 1
            continue
        touched += [(f.at, vm) for vm in f.vms]
    found += checker.in_history(touched, checker.history_rows(state))
    if skipped:
        report.unverified.append(f"{skipped} faults not checked against the history: the "
                                 "controller was down around them")
    report.violations = sorted(report.violations + found)


def controller_down(report: Report, start: float, end: float, grace: float = 15.0) -> bool:
    """Was the controller killed or stopped at some time in [start, end] (or within `grace`
    after it came back)? Then it cannot have seen everything."""
    return any(f.kind in ("kill-controller", "stop-controller") and f.at <= end
               and (f.healed or f.at) + grace >= start for f in report.faults)


def main() -> int:
    from lab import soak_report

    p = argparse.ArgumentParser(prog="python -m lab.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated, of: {', '.join(FAULTS)}")
    p.add_argument("--out", type=Path, default=Path("soak-report"),
                   help="directory for report.json and report.html (default: soak-report)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = p.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    lab.up()
    desired = lab.BASE / "soak-desired.yaml"
    Desired(desired).write()
    lab.start_warden(desired)
    try:
        report = run(desired, args.minutes, args.seed, faults)
    finally:
        if not args.keep:
            lab.down()
    paths = soak_report.write(report, args.out)
    print(soak_report.summary(report))
    print(f"report: {paths[0]} and {paths[1]}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
