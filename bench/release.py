"""Benchmark per Debian release: kvm-warden against that release's own Pacemaker tools.

For each release (this machine's, and the other one in the lab's root of it, with kvm-warden
from that release's package: Python 3.11 with Pacemaker 2.1.5, Python 3.13 with 3.0.0), on the
same generated CIBs:
- observe: `kvm-warden observe --cib F --json` against `crm_mon --output-as=xml` alone;
- preview: kvm-warden's preview of one move (its CibEditor, then crm_simulate on the baseline
  and the patched CIB side by side) against one `crm_simulate --run` of the CIB.
Ratios are to the same release's tool, measured in the same run.

    python bench/release.py [--sizes 3x30,16x1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import OUT  # noqa: E402
from bench.gencib import generate  # noqa: E402
from lab import lab  # noqa: E402

PREVIEW = """
import sys, time
from controller.engine.preview import preview
from controller.model.actions import SetLocation
cib = open(sys.argv[1], 'rb').read()
move = SetLocation(reconciler='bench', why='bench', id='warden-prefer-vm-00001',
                   rsc='vm-00001', node='kvm2', score='1000')
t = time.perf_counter()
pv = preview(cib, (move,), 600)
assert pv.error is None, pv.error
print(time.perf_counter() - t)
"""


def in_release(release: str, package: Path) -> list[str]:
    """The argv prefix that runs a command on `release` with its kvm-warden package at
    /opt/kvm-warden, in a private mount namespace (nothing outside it changes): this machine
    itself, or the lab's root of the other release (this machine's /tmp, /proc and /dev
    inside it)."""
    pkg = f"{package}/opt/kvm-warden"
    if release == lab.host_release():
        script = (f'mount -t tmpfs tmpfs /opt && mkdir -p /opt/kvm-warden && '
                  f'mount --bind "{pkg}" /opt/kvm-warden && exec "$@"')
    else:
        root = lab.release_root(release)
        script = (f'mount --bind /tmp "{root}/tmp" && mount -t proc proc "{root}/proc" && '
                  f'mount --rbind /dev "{root}/dev" && mount -t tmpfs tmpfs "{root}/opt" && '
                  f'mkdir -p "{root}/opt/kvm-warden" && mount --bind "{pkg}" '
                  f'"{root}/opt/kvm-warden" && exec chroot "{root}" "$@"')
    return ["unshare", "-m", "sh", "-c", script, "-"]


def timed(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, timeout=1800)
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def measure(release: str, cib: Path, runs: int) -> tuple[float, float, float, float]:
    package = lab.release_package(release)
    pre = in_release(release, package)
    warden, python = "/opt/kvm-warden/bin/kvm-warden", "/opt/kvm-warden/bin/python3"
    mon = timed([*pre, "env", f"CIB_file={cib}", "crm_mon", "--one-shot", "--inactive",
                 "--output-as=xml"], runs)
    observe = timed([*pre, warden, "observe", "--cib", str(cib), "--json"], runs)
    sim = timed([*pre, "crm_simulate", "-x", str(cib), "--run", "--output-as=xml"], runs)
    previews = [float(subprocess.run([*pre, python, "-c", PREVIEW, str(cib)], check=True,
                                     capture_output=True, text=True, timeout=1800).stdout)
                for _ in range(runs)]
    return mon, observe, sim, statistics.median(previews)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3x30,16x1000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    releases = sorted({lab.host_release(), "12", "13"})
    print(f"{'release':<9}{'size':<11}{'crm_mon s':>10}{'observe s':>10}{'ratio':>7}"
          f"{'crm_simulate s':>15}{'preview s':>10}{'ratio':>7}")
    for size in args.sizes.split(","):
        nodes, vms = (int(x) for x in size.split("x"))
        cib = Path("/tmp") / f"kvm-warden-bench-{nodes}x{vms}.xml"  # /tmp: seen in the root
        cached = OUT / f"cib-{nodes}x{vms}.xml"
        if not cached.exists():
            cached.write_text(generate(nodes, vms))
        cib.write_bytes(cached.read_bytes())
        try:
            for release in releases:
                mon, observe, sim, pv = measure(release, cib, args.runs)
                print(f"{release:<9}{size:<11}{mon:>10.3f}{observe:>10.3f}{observe / mon:>7.2f}"
                      f"{sim:>15.3f}{pv:>10.3f}{pv / sim:>7.2f}", flush=True)
        finally:
            cib.unlink(missing_ok=True)
    print("observe: the whole kvm-warden process (it runs crm_mon); preview: one move's preview "
          "in-process (baseline and patched crm_simulate side by side, a core each); ratios "
          "to the same release's own tool, medians of --runs.")


if __name__ == "__main__":
    main()
