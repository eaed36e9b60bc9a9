"""The scheduler's preview of a patch at cluster sizes: the first preview of a CIB reading runs
crm_simulate twice (baseline and patched, side by side), a second preview of the same reading
once (the baseline is kept); and the loop's passes go on while a preview runs on its thread.

    python bench/preview.py [--timeout 60] [--sizes 3x10,16x1000]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.plan import cib_file  # noqa: E402
from controller import logs  # noqa: E402
from controller.actuators.pacemaker import PacemakerActuator  # noqa: E402
from controller.engine.desired_store import DesiredStore  # noqa: E402
from controller.engine.loop import Controller  # noqa: E402
from controller.engine.observe import pacemaker_source  # noqa: E402
from controller.engine.preview import BackgroundPreviewer, InlinePreviewer  # noqa: E402
from controller.model.actions import SetLocation  # noqa: E402


def move(n: int, node: str) -> SetLocation:
    return SetLocation(reconciler="bench", why="bench", id=f"warden-prefer-vm-{n:05d}",
                       rsc=f"vm-{n:05d}", node=node, score="1000")


def previews(nodes: int, vms: int, timeout: float) -> None:
    cib = cib_file(nodes, vms)
    inline = InlinePreviewer(cib.read_bytes)
    first = inline((move(1, "kvm3"),), None, timeout)
    second = inline((move(1, "kvm3"), move(2, "kvm3")), None, timeout)
    assert first is not None and second is not None
    for label, pv in (("first (baseline unknown)", first), ("second (baseline known)", second)):
        if pv.error:
            print(f"preview {nodes} x {vms}, {label}: not finished within {timeout:.0f} s: the "
                  "gate counts it as not proven safe")
        else:
            print(f"preview {nodes} x {vms}, {label}: {pv.seconds:.2f} s, "
                  f"{pv.simulations} crm_simulate run(s), {len(pv.steps)} step(s)")
    if not (first.error or second.error):
        print(f"  ratio: the known baseline makes a preview {first.seconds / second.seconds:.1f}x "
              "cheaper in wall time (and half the CPU: one scheduler run, not two)")


def passes_during_a_preview(nodes: int, vms: int) -> None:
    """An incremental pass of the loop while the preview of a patch runs on its thread."""
    with tempfile.TemporaryDirectory(prefix="kvm-warden-bench-") as tmp:
        work = Path(tmp, "cib.xml")
        shutil.copy(cib_file(nodes, vms), work)
        desired = Path(tmp, "desired.yaml")
        # One VM asked elsewhere: the pass's patch needs a preview.
        desired.write_text("version: 1\nvms:\n  - name: '00001'\n    resource: vm-00001\n"
                           "    placement: {prefer: kvm3}\n")
        store = DesiredStore(str(desired))
        store.poll()
        actuator = PacemakerActuator(str(work))
        ready = threading.Event()
        ctl = Controller(source=pacemaker_source(str(work)), actuator=actuator, desired=store)
        ctl.previewer = previewer = BackgroundPreviewer(actuator.query, ready.set)
        t = time.perf_counter()
        ctl.run_pass()
        full = time.perf_counter() - t
        incremental = []
        while previewer.busy:
            t = time.perf_counter()
            ctl.run_pass(only=frozenset({"00001"}))
            incremental.append(time.perf_counter() - t)
            time.sleep(0.5)
        ready.wait()
        ctl.run_pass()  # the pass that takes the finished preview
        pv = ctl.view.preview
        shown = f"{pv.seconds:.1f} s" if pv is not None else "?"
        print(f"loop {nodes} x {vms}: full pass {full:.2f} s (patch held while previewing); "
              f"{len(incremental)} incremental passes completed during the {shown} preview, "
              f"median {sorted(incremental)[len(incremental) // 2] * 1000:.1f} ms"
              if incremental else f"loop {nodes} x {vms}: the preview ended before a pass")


def main() -> None:
    logs.configure(sys.stderr, logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--sizes", default="3x10,16x1000")
    args = p.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    for nodes, vms in sizes:
        previews(nodes, vms, args.timeout)
    nodes, vms = sizes[-1]
    passes_during_a_preview(nodes, vms)


if __name__ == "__main__":
    main()
