"""Helpers shared by the benchmarks: timing a child process with its peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

OUT = Path(__file__).parent / "out"


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[float, int]:
    """Wall time (s) and peak RSS (MB) of one child process (wait4 gives its own rusage)."""
    started = time.perf_counter()
    p = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=dict(env) if env is not None else None)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed: {p.stderr.read().decode() if p.stderr else ''}")
    return wall, usage.ru_maxrss // 1024


def median_run(argv: Sequence[str], runs: int, env: Mapping[str, str] | None = None
               ) -> tuple[float, int]:
    results = [run_child(argv, env) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)
