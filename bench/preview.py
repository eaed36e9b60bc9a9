"""The scheduler's preview of a patch (crm_simulate on the patched CIB and on the unpatched one)
at cluster sizes, and what the loop does where it stops being practical.

    python bench/preview.py [--timeout 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.plan import cib_file  # noqa: E402
from controller.engine.preview import preview  # noqa: E402
from controller.model.actions import SetLocation  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    for nodes, vms in ((3, 10), (16, 1000), (32, 5000)):
        cib = cib_file(nodes, vms).read_bytes()
        move = SetLocation(reconciler="bench", why="bench", id="warden-prefer-vm-00001",
                           rsc="vm-00001", node="kvm3", score="1000")
        pv = preview(cib, [move], args.timeout)
        if pv.error:
            print(f"preview {nodes} x {vms}: not finished within {args.timeout:.0f} s "
                  f"({pv.error[:60]}...): the gate counts it as not proven safe, so such a "
                  "patch waits for policy.allow_disruption or plan --allow-disruption")
        else:
            print(f"preview {nodes} x {vms}: {pv.seconds:.2f} s (two scheduler runs), "
                  f"{len(pv.steps)} step(s): {[f'{s.action} {s.resource}' for s in pv.steps][:3]}")


if __name__ == "__main__":
    main()
