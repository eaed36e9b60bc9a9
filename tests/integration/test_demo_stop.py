"""Issue "Day one", 7: a SIGINT sent to `make demo` alone (not to its process group, as a
supervisor or `kill -INT` of make's pid does) ended make and left the demo running. The demo
now follows its parent's end (PR_SET_PDEATHSIG) and stops what it started. Shown on the
simulated demo (the lab's teardown on SIGTERM is the same `finally`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_the_demo_stops_what_it_started_when_its_parent_ends(tmp_path: Path) -> None:
    # make's place: a parent that runs the demo and is then killed without its group
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; "
         "subprocess.call([sys.executable, '-m', 'lab.demo'])"],
        cwd=ROOT, env={**os.environ, "KVM_WARDEN_DEMO_SIMULATED": "1",
                       "KVM_WARDEN_WEB_PORT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    demo = controller = 0
    try:
        demo = wait_for("the demo", lambda: (children(parent.pid) or [0])[0], 30)
        controller = wait_for("its controller", lambda: (children(demo) or [0])[0], 30)
        time.sleep(1)  # the controller is running its passes
        assert alive(demo) and alive(controller)
        parent.send_signal(signal.SIGKILL)  # its group is not signalled
        parent.wait(timeout=10)
        wait_for("the demo and its controller gone",
                 lambda: not alive(demo) and not alive(controller), 40)
    finally:
        for pid in (controller, demo):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
