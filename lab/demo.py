"""`make demo`: kvm-warden healing a real 3-node KVM cluster on this machine.

Brings the lab up (lab/lab.py), starts an agent on every node and the controller on
kvm1, shows the VM overview, then plays a short story -- a guest crashes, the desired state is
edited to move another -- printing kvm-warden's audit lines as they happen. The cluster stays
up until Ctrl-C, then everything is torn down. Where namespaces or /dev/kvm are unavailable it
falls back to the simulated default (`kvm-warden run --simulate`) and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import lab

ROOT = Path(__file__).resolve().parent.parent


def can_run_lab() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not usable"
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return "network/mount namespaces are not available"
    return None


def settled() -> bool:
    """Nothing in flight, in Pacemaker's view and in the controller's (whose last pass the
    tables show): every VM Started."""
    import msgspec

    from controller.model.overview import StatusDoc

    if set(lab.vm_roles().values()) != {"Started"}:
        return False
    try:
        rows = msgspec.json.decode(lab.warden_get("/status"), type=StatusDoc).vms
    except (ValueError, KeyError):
        return False
    return all(r.state == "Started" for r in rows)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def status_table() -> str:
    import msgspec

    from controller.app.status import render_table
    from controller.model.overview import StatusDoc

    try:
        return render_table(msgspec.json.decode(lab.warden_get("/status"), type=StatusDoc).vms)
    except (ValueError, KeyError):
        return "(controller not answering yet)"


def audit_tail(seen: int) -> int:
    records = [r for r in lab.audit_records() if r.get("event") in ("audit", "finding")]
    for r in records[seen:]:
        if r["event"] == "audit":
            print(f"   audit: {r['outcome']:<7} {r['action']}   ({r['reconciler']}: {r['why']})")
        else:
            print(f"   finding: {r.get('severity')}: {r.get('message')}")
    return len(records)


def watch(what: str, cond, timeout: float, seen: int) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = audit_tail(seen)
        try:
            if cond():
                print(f"   -> {what}")
                return seen
        except Exception:  # noqa: BLE001 - the cluster is in transition
            pass
        time.sleep(0.5)
    print(f"   (still waiting for: {what})")
    return seen


def die_with_parent() -> None:
    """A SIGINT sent to `make demo` alone (not to its process group) ends make, not its child:
    the kernel then sends this process SIGTERM, and it tears the lab down like on Ctrl-C."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        print("make demo: cannot follow make's end (prctl); stop it with Ctrl-C", file=sys.stderr)
    elif os.getppid() != parent:  # the parent ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def simulated(why: str) -> int:
    print(f"make demo: the lab cannot run here ({why}); running the simulated default "
          "instead (Pacemaker's tools on a CIB file, libvirt's test driver).", flush=True)
    port = os.environ.get("KVM_WARDEN_WEB_PORT", "9443")  # the lab's demo port, here too
    child = subprocess.Popen([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                              "--http-port", port])
    try:
        return child.wait()
    except KeyboardInterrupt:
        return 0
    finally:  # never leave the controller behind: Ctrl-C, SIGTERM or make's end
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main() -> int:
    import signal

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # tear down on SIGTERM too, not only Ctrl-C
    die_with_parent()
    why = os.environ.get("KVM_WARDEN_DEMO_SIMULATED") and "asked for (KVM_WARDEN_DEMO_SIMULATED)" \
        or can_run_lab()
    if why:
        return simulated(why)
    work = Path(lab.BASE)
    work.mkdir(parents=True, exist_ok=True)
    desired = work / "desired.yaml"
    shutil.copy(ROOT / "lab" / "desired.yaml", desired)
    try:
        say("Bringing up kvm1..kvm3: corosync, Pacemaker and libvirtd in network namespaces")
        info = lab.up()
        print(f"   cluster up with 3 real KVM guests in {info['seconds']} s: {info['vms']}")
        say("Starting kvm-warden: an agent on every node (CURVE), the controller on kvm1")
        lab.start_warden(desired)
        seen = watch("first pass done", lambda: '"vms"' in lab.warden_get("/status"), 60, 0)
        seen = watch("placement converged", lambda: lab.vms_running().get("vm-web01") == ["kvm1"]
                     and lab.vms_running().get("vm-web02") == ["kvm2"] and settled(), 90, seen)
        print(status_table())
        web = lab.Forwarder("kvm1", 9810, host_port=int(os.environ.get("KVM_WARDEN_WEB_PORT",
                                                                          "9443")))
        print(f"\n   web view:  https://127.0.0.1:{web.host_port}/   user {lab.HA_USER}, password "
              f"{lab.HA_PASSWORD} (the lab's own certificate: {lab.BASE / 'ha' / 'cert.pem'};")
        print("              from another machine: ssh -L "
              f"{web.host_port}:127.0.0.1:{web.host_port} root@THIS-HOST)")
        print(f"   metrics:   curl --cacert {lab.BASE / 'ha' / 'cert.pem'} -u "
              f"{lab.HA_USER}:{lab.HA_PASSWORD} https://127.0.0.1:{web.host_port}/metrics")
        print(f"   desired state: {desired}")
        print(f"   audit:     kvm-warden audit --state-dir {lab.BASE / 'state'}   (service log: "
              f"{work / 'controller.log'})")
        print("   any kvm-warden command on a node:  .venv/bin/python -m lab.lab on kvm1 "
              f"kvm-warden plan --desired {desired}")

        say("Story 1: web01's qemu process is killed (kill -9) on kvm1")
        pid = lab.node_pids("kvm1", "guest=web01,")[0]
        lab.on("kvm1", "kill", "-9", pid)
        seen = watch("Pacemaker restarted web01", lambda: "vm-web01" in lab.vms_running(), 60,
                     seen)
        seen = watch("kvm-warden cleaned web01's fail-count once it ran again", lambda: any(
            str(r.get("action", "")).startswith("cleanup vm-web01 on kvm1")
            for r in lab.audit_records()), 90, seen)

        say("Story 2: the operator edits the desired state: web02 should prefer kvm3")
        desired.write_text(desired.read_text().replace("prefer: kvm2", "prefer: kvm3"))
        seen = watch("web02 live-migrated to kvm3",
                     lambda: lab.vms_running().get("vm-web02") == ["kvm3"] and settled(), 120, seen)
        print(status_table())

        say("The cluster keeps running; kvm-warden keeps watching. Ctrl-C tears it all down.")
        while True:
            seen = audit_tail(seen)
            time.sleep(1)
    except KeyboardInterrupt:
        print()
    finally:
        say("Tearing the lab down")
        lab.down()
        print("   done: no namespace or process of the lab is left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
