"""Benchmarks for planning and applying (issue 4).

1. A full plan (index + every reconciler) at 32 nodes x 5,000 VMs: target <= 100 ms median.
2. One incremental pass after a single-VM event (fold into the index + plan that VM):
   target <= 5 ms.
3. Applying 500 constraint changes to a 16 x 1,000 CIB file: kvm-warden's one patch (crm_diff +
   cibadmin --patch) vs `pcs -f FILE constraint location ...` calls, in the same run. pcs costs
   about a second per call, so a sample of calls is timed and the per-call median is
   multiplied by 500 (said so in the output). Target: >= 50x faster.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import OUT  # noqa: E402
from bench.gencib import generate  # noqa: E402
from controller.actuators.pacemaker import PacemakerActuator  # noqa: E402
from controller.model.actions import SetLocation  # noqa: E402
from controller.model.context import Context  # noqa: E402
from controller.model.desired import parse_desired  # noqa: E402
from controller.model.index import build_index, with_resource_nodes  # noqa: E402
from controller.model.observed import ObservedState  # noqa: E402
from probes.pacemaker.cib import parse_cib  # noqa: E402
from probes.pacemaker.crm_mon import parse_crm_mon  # noqa: E402
from reconcilers.all import plan_all  # noqa: E402

PCS_SAMPLE = 8


def cib_file(nodes: int, vms: int) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"cib-{nodes}x{vms}.xml"
    if not path.exists():
        path.write_text(generate(nodes, vms))
    return path


def observed_from(path: Path) -> ObservedState:
    env = {**os.environ, "CIB_file": str(path)}
    mon = subprocess.run(["crm_mon", "--one-shot", "--inactive", "--output-as=xml"], env=env,
                         capture_output=True, check=True).stdout
    return ObservedState(status=parse_crm_mon(mon), cib=parse_cib(path.read_bytes()))


def desired_yaml(nodes: int, vms: int) -> str:
    lines = ["version: 1", "storage:", "  - {name: gfs2, resource: gfs2_res01-clone, "
             "mountpoint: /kvm/storage, requires: [clvmd-clone, dlm-clone]}", "vms:"]
    for v in range(vms):
        lines.append(f"  - name: '{v:05d}'")
        lines.append(f"    resource: vm-{v:05d}")
        prefer = f"kvm{(v + 1) % nodes + 1}"
        if v % 5 == 0:
            allowed = sorted({prefer, f"kvm{(v + 2) % nodes + 1}"})
            lines.append(f"    placement: {{allowed: [{', '.join(allowed)}], prefer: {prefer}}}")
        else:
            lines.append(f"    placement: {{prefer: {prefer}}}")
        if v % 10 == 0 and v + 1 < vms:
            lines.append(f"    anti_affinity: ['{v + 1:05d}']")
    return "\n".join(lines) + "\n"


def timed(fn: object, runs: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), result


def bench_plan() -> None:
    nodes, vms = 32, 5000
    path = cib_file(nodes, vms)
    observed = observed_from(path)
    t = time.perf_counter()
    desired = parse_desired(desired_yaml(nodes, vms))
    load = time.perf_counter() - t
    t_index, index = timed(lambda: build_index(observed), 7)
    t_plan, plan = timed(lambda: plan_all(Context(index=index, desired=desired)), 7)
    n_actions = len(plan.actions)  # type: ignore[attr-defined]
    print(f"full plan, {nodes} x {vms} (drift everywhere: {n_actions} actions): index "
          f"{t_index * 1000:.1f} ms + plan {t_plan * 1000:.1f} ms = "
          f"{(t_index + t_plan) * 1000:.1f} ms median (target <= 100 ms; desired file of "
          f"{vms} VMs loads in {load * 1000:.0f} ms, once per edit)")

    # Converged: apply the plan to the CIB (in memory) and plan again.
    from lxml import etree

    from controller.actuators.cibedit import CibEditor

    root = etree.fromstring(path.read_bytes(), parser=etree.XMLParser(huge_tree=True))
    editor = CibEditor(root)
    for a in plan.actions:  # type: ignore[attr-defined]
        editor.apply(a)
    converged = ObservedState(status=observed.status, cib=parse_cib(etree.tostring(root)))
    t_index2, index2 = timed(lambda: build_index(converged), 7)
    t_plan2, plan2 = timed(lambda: plan_all(Context(index=index2, desired=desired)), 7)
    print(f"full plan, converged ({len(plan2.actions)} actions): index {t_index2 * 1000:.1f} ms"  # type: ignore[attr-defined]
          f" + plan {t_plan2 * 1000:.1f} ms = {(t_index2 + t_plan2) * 1000:.1f} ms median")

    # Incremental: one VM moved (a libvirt/alert event); fold it and plan that VM only.
    vm = "00042"
    rid = f"vm-{vm}"

    def incremental() -> object:
        idx = with_resource_nodes(index2, rid, ("kvm7",))  # type: ignore[arg-type]
        return plan_all(Context(index=idx, desired=desired, scope=frozenset({vm})))

    t_inc, inc = timed(incremental, 101)
    print(f"incremental pass after one VM event: {t_inc * 1000:.3f} ms median "
          f"({len(inc.actions)} action(s); target <= 5 ms)")  # type: ignore[attr-defined]


def bench_apply() -> None:
    path = cib_file(16, 1000)
    work = OUT / "apply-warden.xml"
    shutil.copy(path, work)
    actions = [SetLocation(reconciler="bench", why="bench", id=f"warden-prefer-vm-{v:05d}",
                           rsc=f"vm-{v:05d}", node=f"kvm{v % 16 + 1}", score="1000")
               for v in range(500)]
    t = time.perf_counter()
    outcomes = PacemakerActuator(str(work)).apply(actions)
    warden = time.perf_counter() - t
    assert all(o.applied for o in outcomes)
    assert work.read_text().count('id="warden-prefer-vm-') == 500

    pcs = shutil.which("pcs")
    if pcs is None:
        print(f"apply 500 constraints: kvm-warden one patch {warden:.2f} s; pcs not installed")
        return
    pwork = OUT / "apply-pcs.xml"
    shutil.copy(path, pwork)
    samples = []
    for v in range(PCS_SAMPLE):
        t = time.perf_counter()
        subprocess.run([pcs, "-f", str(pwork), "constraint", "location", f"vm-{v:05d}",
                        "prefers", f"kvm{v % 16 + 1}=1000"], check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    per_call = statistics.median(samples)
    print(f"apply 500 constraint changes to a 16 x 1000 CIB: kvm-warden one patch "
          f"{warden:.2f} s; pcs -f {per_call:.2f} s per call (median of {PCS_SAMPLE} timed "
          f"calls) x 500 = {per_call * 500:.0f} s extrapolated; ratio {per_call * 500 / warden:.0f}x"
          f" (target >= 50x)")


if __name__ == "__main__":
    bench_plan()
    bench_apply()
