"""Benchmark on the real 3-node lab (issue 5): startup, detection and healing times, and the
controller's own cost while idle.

Prints: lab startup; VM crash -> controller aware; node loss -> controller aware; desired-file
edit -> migration started (the CIB change applied) and -> completed (running on the target);
controller CPU seconds and RSS over an idle window (--idle-seconds, 300 by default: 5 minutes
with 3 nodes and 3 VMs). Needs root, /dev/kvm and namespaces, like the lab itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from lab import lab  # noqa: E402

DESIRED = (Path(__file__).parent.parent / "tests" / "lab" / "desired.yaml").read_text()


def until(cond, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            if cond():
                return time.monotonic() - t
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.1)
    raise SystemExit("bench: timed out")


def metric(name: str, label: str = "") -> float:
    for line in lab.warden_get("/metrics").splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))  # type: ignore[union-attr]
    return cpu, rss // 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--idle-seconds", type=float, default=300.0)
    args = p.parse_args()
    desired = lab.BASE / "bench-desired.yaml"
    try:
        t = time.monotonic()
        info = lab.up()
        print(f"lab startup (3 nodes online, 3 KVM guests running): {time.monotonic() - t:.1f} s")
        lab.BASE.mkdir(exist_ok=True)
        desired.write_text(DESIRED)
        lab.start_warden(desired)
        until(lambda: lab.vms_running().get("vm-web01") == ["kvm1"]
              and lab.vms_running().get("vm-web02") == ["kvm2"] and '"vms"' in
              lab.warden_get("/status"))
        time.sleep(3)

        before = metric("kvm_warden_bus_events_total", 'kind="DomainLifecycle"')
        pid = lab.node_pids("kvm1", "guest=web01,")[0]
        lab.on("kvm1", "kill", "-9", pid)
        aware = until(lambda: metric("kvm_warden_bus_events_total",
                                     'kind="DomainLifecycle"') > before, 20)
        print(f"VM crash (kill -9 qemu) -> controller aware: {aware:.2f} s")
        until(lambda: "vm-web01" in lab.vms_running(), 60)

        lab.kill_node("kvm3")
        aware = until(lambda: metric("kvm_warden_node_online", 'node="kvm3"') == 0.0
                      and "kvm_warden_node_online{node=\"kvm3\"}" in lab.warden_get("/metrics"),
                      60)
        print(f"node loss (kill -9 every process of kvm3) -> controller aware: {aware:.2f} s "
              "(corosync token 1 s in the lab)")
        lab.restart_node("kvm3")
        until(lambda: metric("kvm_warden_node_online", 'node="kvm3"') == 1.0, 120)
        until(lambda: len(lab.vms_running()) == 3, 120)
        time.sleep(5)

        edit = time.monotonic()
        desired.write_text(DESIRED.replace("prefer: kvm2", "prefer: kvm3"))
        started = until(lambda: "warden-prefer-vm-web02\" rsc=\"vm-web02\" node=\"kvm3\"" in
                        lab.on("kvm1", "cibadmin", "--query", "--scope", "constraints").stdout,
                        60)
        done = until(lambda: lab.vms_running().get("vm-web02") == ["kvm3"], 120)
        print(f"desired-file edit -> migration started (constraint in the CIB): {started:.2f} s; "
              f"-> completed (guest running on kvm3): {time.monotonic() - edit:.2f} s")
        del done

        ctl = int(lab.node_pids("kvm1", "controller.app.cli controller")[0])
        time.sleep(5)
        cpu0, rss0 = proc_cpu_rss(ctl)
        time.sleep(args.idle_seconds)
        cpu1, rss1 = proc_cpu_rss(ctl)
        print(f"controller idle for {args.idle_seconds:.0f} s (3 nodes, 3 VMs, resync every 10 s):"
              f" {cpu1 - cpu0:.2f} CPU s ({100 * (cpu1 - cpu0) / args.idle_seconds:.2f} % of a "
              f"core), RSS {rss0} -> {rss1} MB")
        print(json.dumps({"lab_seconds": info["seconds"]}))
    finally:
        lab.down()


if __name__ == "__main__":
    main()
