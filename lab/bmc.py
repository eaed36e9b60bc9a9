"""The lab's power controller (a stand-in for each node's IPMI/BMC), run on the host.

A lab node is a set of namespaces on one machine; "power" is its processes. From inside a node
nothing can start another node (each node has its own /run, hence no /run/netns), so the power
side lives here, on the host, behind a unix socket the fence agent (lab/fence_kvmlab.py) talks to,
as a real fence agent talks to a BMC over the network. One request per connection, one line:
`status NODE` -> `on`/`off`; `off NODE` kills every process of the node (Pacemaker, corosync,
libvirtd, its qemu guests, the kvm-warden agent) and waits until none is left; `on NODE` starts
the node (no-op if it runs). While the file `bmc-fail` exists in the lab directory, every
power request fails: the "BMC is unreachable" case where fencing cannot succeed. While the file
`no-boot-NODE` exists, `on NODE` succeeds but the node does not come up (a board that powers on
and never boots): a fenced node then stays down until a test boots it, instead of rejoining
seconds after the fence's reboot.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import sys
import time

from lab import lab

SOCKET = lab.BASE / "bmc.sock"
FAIL_FLAG = lab.BASE / "bmc-fail"


def power_off(node: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = lab.netns_pids(node)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"{node}: processes left after 10 s")


def power_on(node: str) -> None:
    if not lab.netns_pids(node) and not (lab.BASE / f"no-boot-{node}").exists():
        lab.start_node(node)


def handle(line: str) -> str:
    verb, _, node = line.strip().partition(" ")
    if node not in lab.NODES:
        return f"error: unknown node {node!r}"
    if verb == "status":
        return "on" if lab.netns_pids(node) else "off"
    if FAIL_FLAG.exists():
        return "error: power controller unreachable (bmc-fail)"
    if verb == "off":
        power_off(node)
    elif verb == "on":
        power_on(node)
    else:
        return f"error: unknown request {verb!r}"
    return "ok"


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(200).decode(errors="replace")
        try:
            answer = handle(line)
        except Exception as exc:  # noqa: BLE001 - a failed request is an answer, not a crash
            answer = f"error: {exc}"
        print(f"{time.strftime('%H:%M:%S')} {line.strip()} -> {answer}", flush=True)
        self.wfile.write(answer.encode() + b"\n")


def main() -> int:
    SOCKET.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(SOCKET), Handler)
    SOCKET.chmod(0o600)  # the fencer runs as root
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        SOCKET.unlink(missing_ok=True)
    return 0


def request(line: str, timeout: float = 30.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(SOCKET))
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


if __name__ == "__main__":
    sys.exit(main())
