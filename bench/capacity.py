"""The N+1 verdict (`kvm-warden capacity`: crm_simulate --node-fail for each node) timed against
one crm_simulate run of the same cluster, at 3 x 30, 8 x 200 and 16 x 1,000 (bench/gencib.py's
CIBs). Prints figures; asserts nothing.

    python bench/capacity.py [--sizes 3x30,8x200,16x1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.gencib import generate  # noqa: E402
from controller.engine.capacity import LossCache, failover_report  # noqa: E402
from controller.engine.observe import observe_once  # noqa: E402
from controller.model.index import build_index  # noqa: E402
from probes.pacemaker.simulate import simulate  # noqa: E402


def measure(nodes: int, vms: int) -> None:
    """Sized as kvm-warden's `capacity:` makes a cluster (utilization, stickiness, balanced),
    with room for N+1."""
    sizes = [512, 1024, 2048, 768]
    node_mib = int(sum(sizes[v % 4] for v in range(vms)) / (nodes - 1) * 1.1)
    with tempfile.TemporaryDirectory() as tmp:
        cib = Path(tmp) / "cib.xml"
        text = generate(nodes, vms, sizes=sizes, node_mib=node_mib)
        cib.write_text(text)
        t = time.perf_counter()
        simulate(str(cib), timeout=900)
        one = time.perf_counter() - t
        observed, raw = observe_once(str(cib))
        cache = LossCache()
        t = time.perf_counter()
        report = failover_report(raw, build_index(observed), cache=cache)
        verdict = time.perf_counter() - t
        # A status update the scheduler does not decide by (the monitors' call ids): the cached
        # answers stand.
        cib.write_text(text.replace('num_updates="0"', 'num_updates="1"')
                       .replace('call-id="3"', 'call-id="4"'))
        observed, raw = observe_once(str(cib))
        t = time.perf_counter()
        failover_report(raw, build_index(observed), cache=cache)
        cached = time.perf_counter() - t
        print(f"{nodes:>2} x {vms:>5}: one crm_simulate {one:6.2f} s; N+1 verdict "
              f"({len(report)} nodes, {os.cpu_count()} cores) {verdict:7.2f} s = "
              f"{verdict / one:4.1f}x one run; after a status-only update {cached:5.2f} s = "
              f"{cached / one:4.2f}x ({cache.asked - len(report)} scheduler runs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3x30,8x200,16x1000")
    for size in ap.parse_args().sizes.split(","):
        n, v = size.split("x")
        measure(int(n), int(v))


if __name__ == "__main__":
    main()
