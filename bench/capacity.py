"""The N+1 verdict (`kvm-warden capacity`: crm_simulate --node-fail for each node) timed against
one crm_simulate run of the same cluster, at 3 x 30, 8 x 200 and 16 x 1,000 (bench/gencib.py's
CIBs). Prints figures; asserts nothing.

    python bench/capacity.py [--sizes 3x30,8x200,16x1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.gencib import generate  # noqa: E402
from controller.engine.capacity import failover_report  # noqa: E402
from controller.engine.observe import observe_once  # noqa: E402
from controller.model.index import build_index  # noqa: E402
from probes.pacemaker.simulate import simulate  # noqa: E402


def measure(nodes: int, vms: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cib = Path(tmp) / "cib.xml"
        cib.write_text(generate(nodes, vms))
        t = time.perf_counter()
        simulate(str(cib), timeout=900)
        one = time.perf_counter() - t
        observed, raw = observe_once(str(cib))
        t = time.perf_counter()
        report = failover_report(raw, build_index(observed))
        verdict = time.perf_counter() - t
        print(f"{nodes:>2} x {vms:>5}: one crm_simulate {one:6.2f} s; N+1 verdict "
              f"({len(report)} nodes) {verdict:7.2f} s = {verdict / one:4.1f}x one run")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3x30,8x200,16x1000")
    for size in ap.parse_args().sizes.split(","):
        n, v = size.split("x")
        measure(int(n), int(v))


if __name__ == "__main__":
    main()
