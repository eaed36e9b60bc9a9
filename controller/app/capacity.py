"""`kvm-warden capacity`: if any one node dies, does every VM have room on the others?
Pacemaker's scheduler answers, node by node, on the cluster as it is (engine/capacity.py)."""

from __future__ import annotations

import json
import sys

from controller.app.text import for_terminal
from controller.engine.capacity import NodeLoss, failover_report, said
from controller.engine.observe import observe_once
from controller.model.index import build_index


def capacity_command(cib_file: str | None, as_json: bool, tolerate: int = 1) -> int:
    """Exit 0 when every node's loss (and every group's of `tolerate`) leaves every VM
    running, 2 when one does not."""
    if tolerate < 1:
        print("kvm-warden: error: --tolerate is 1 or more", file=sys.stderr)
        return 1
    observed, raw = observe_once(cib_file)
    report = failover_report(raw, build_index(observed), tolerate)
    if as_json:
        json.dump([{"node": r.node, "vms": list(r.vms), "placed": r.placed,
                    "stopped": list(r.stopped), "fits": r.fits, "error": r.error}
                   for r in report], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(for_terminal("\n".join(_line(r) for r in report) or "no node online"))
    return 0 if all(r.fits for r in report) else 2


def _line(r: NodeLoss) -> str:
    fails = f"if {said(r.node)} {'fail' if '+' in r.node else 'fails'}"
    if r.error is not None:
        return f"{fails}: not known ({r.error})"
    where = ", ".join(f"{v} -> {r.placed.get(v, 'nowhere')}" for v in r.vms) or "no VM there"
    verdict = "every VM has room" if r.fits else \
        f"left STOPPED: {', '.join(r.stopped)} (no room)"
    return f"{fails}: {where}; {verdict}"
