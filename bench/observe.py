"""Benchmark: `kvm-warden observe --cib` against `crm_mon` alone, on the same CIB, same run.

Target (issue 2): observe <= 1.25 x crm_mon's own wall time at 32 nodes x 5,000 VMs.
observe runs crm_mon itself, parses its XML and the CIB (in parallel with crm_mon), and prints
the JSON document; the ratio is the price of everything kvm-warden adds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import OUT, median_run  # noqa: E402
from bench.gencib import generate  # noqa: E402

SIZES = ((3, 30, 5), (16, 1000, 3), (32, 5000, 3))  # nodes, VMs, runs (median reported)

# kvm-warden's own memory, without crm_mon's: parse saved crm_mon XML and the CIB in a fresh
# interpreter and report that process's peak RSS (wait4 on `observe` would include its child).
PARSE_ONLY = """
import resource, sys, time
from probes.pacemaker.crm_mon import parse_crm_mon
from probes.pacemaker.cib import parse_cib
from controller.app.observe import observe_document
mon, cib = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()
t = time.perf_counter()
doc = observe_document(parse_crm_mon(mon), parse_cib(cib))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def main() -> None:
    OUT.mkdir(exist_ok=True)
    warden = shutil.which("kvm-warden", path=str(Path(sys.executable).parent)) or "kvm-warden"
    print(f"{'size':<14}{'crm_mon s':>10}{'observe s':>11}{'ratio':>7}{'parse s':>9}"
          f"{'crm_mon MB':>12}{'warden MB':>11}{'CIB MB':>8}")
    for nodes, vms, runs in SIZES:
        path = OUT / f"cib-{nodes}x{vms}.xml"
        if not path.exists():
            t = time.perf_counter()
            path.write_text(generate(nodes, vms))
            print(f"  (generated {path.name} in {time.perf_counter() - t:.1f} s)")
        env = {**os.environ, "CIB_file": str(path)}
        crm_mon, crm_mon_mb = median_run(
            ["crm_mon", "--one-shot", "--inactive", "--output-as=xml"], runs, env)
        observe, observe_mb = median_run([warden, "observe", "--cib", str(path), "--json"], runs)
        mon_xml = OUT / f"crm_mon-{nodes}x{vms}.xml"
        mon_xml.write_bytes(subprocess.run(["crm_mon", "--one-shot", "--inactive",
                                            "--output-as=xml"], env=env, capture_output=True,
                                           check=True).stdout)
        parse = subprocess.run([sys.executable, "-c", PARSE_ONLY, str(mon_xml), str(path)],
                               capture_output=True, text=True, check=True,
                               cwd=Path(__file__).parent.parent).stdout.split()
        print(f"{f'{nodes} x {vms}':<14}{crm_mon:>10.3f}{observe:>11.3f}{observe / crm_mon:>7.2f}"
              f"{float(parse[0]):>9.3f}{crm_mon_mb:>12}{parse[1]:>11}"
              f"{path.stat().st_size / 1e6:>8.1f}")
        del observe_mb
    print("observe s: the whole `kvm-warden observe --cib F --json` process (it runs crm_mon);"
          " parse s / warden MB: kvm-warden's parsing of crm_mon XML + CIB into the JSON"
          " document, in its own process. Target: ratio <= 1.25 at 32 x 5000.")


if __name__ == "__main__":
    main()
