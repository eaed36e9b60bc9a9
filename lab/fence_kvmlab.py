#!/usr/bin/python3
"""fence_kvmlab: the lab's fence agent, following the fence-agents conventions.

Installed as /usr/sbin/fence_kvmlab, where Pacemaker's fencer finds agents. Options arrive as
`key=value` lines on stdin (or `-o ACTION -n PLUG` on the command line); actions on, off,
reboot, status, list, monitor, metadata; exit 0 on success, 1 on failure, 2 for status "off".
Power goes through the lab's power controller (lab/bmc.py, a unix socket on the host): the
agent runs inside a node's namespaces, which cannot reach another node's. It refuses to fence
its own node. Standard library only: the fencer runs it with the system python3.
"""

import socket
import sys

DEFAULT_SOCKET = "/var/tmp/kvm-warden-lab/bmc.sock"
NODES = ("kvm1", "kvm2", "kvm3")

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_kvmlab" shortdesc="Fence agent for the kvm-warden lab">
<longdesc>Powers lab nodes (network namespaces on one host) off and on through the lab's
power controller socket, as fence_ipmilan does through a BMC.</longdesc>
<vendor-url>https://github.com/kvm-warden</vendor-url>
<parameters>
  <parameter name="action" unique="0" required="1">
    <getopt mixed="-o, --action=[action]"/>
    <content type="string" default="reboot"/>
    <shortdesc lang="en">Fencing action</shortdesc>
  </parameter>
  <parameter name="plug" unique="0" required="1" obsoletes="port">
    <getopt mixed="-n, --plug=[id]"/>
    <content type="string"/>
    <shortdesc lang="en">The node to act on</shortdesc>
  </parameter>
  <parameter name="port" unique="0" required="0" deprecated="1">
    <getopt mixed="-n, --plug=[id]"/>
    <content type="string"/>
    <shortdesc lang="en">The node to act on</shortdesc>
  </parameter>
  <parameter name="socket" unique="0" required="0">
    <getopt mixed="--socket=[path]"/>
    <content type="string" default="/var/tmp/kvm-warden-lab/bmc.sock"/>
    <shortdesc lang="en">The lab power controller's unix socket</shortdesc>
  </parameter>
</parameters>
<actions>
  <action name="on" automatic="0"/>
  <action name="off"/>
  <action name="reboot"/>
  <action name="status"/>
  <action name="list"/>
  <action name="monitor"/>
  <action name="metadata"/>
</actions>
</resource-agent>
"""


def options(argv, stdin):
    opts = {}
    it = iter(argv)
    for arg in it:
        if arg in ("-o", "-n"):
            opts["action" if arg == "-o" else "plug"] = next(it, "")
        elif arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            opts[key] = value
    if not argv and not stdin.isatty():
        for line in stdin.read(65536).splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                opts[key.strip()] = value.strip()
    return opts


def bmc(path, line):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def main():
    opts = options(sys.argv[1:], sys.stdin)
    action = opts.get("action") or opts.get("option") or "reboot"
    target = opts.get("plug") or opts.get("port") or opts.get("nodename") or ""
    path = opts.get("socket") or DEFAULT_SOCKET
    if action == "metadata":
        sys.stdout.write(METADATA)
        return 0
    if action == "list":
        sys.stdout.write("".join(f"{n},{n}\n" for n in NODES))
        return 0
    if action == "monitor":
        try:
            return 0 if bmc(path, "status kvm1") in ("on", "off") else 1
        except OSError as exc:
            sys.stderr.write(f"fence_kvmlab: power controller: {exc}\n")
            return 1
    if target not in NODES:
        sys.stderr.write(f"fence_kvmlab: unknown node {target!r}\n")
        return 1
    if action in ("off", "reboot") and target == socket.gethostname():
        sys.stderr.write(f"fence_kvmlab: refusing to fence my own node {target}\n")
        return 1
    steps = {"on": ["on"], "off": ["off"], "reboot": ["off", "on"], "status": ["status"]}
    if action not in steps:
        sys.stderr.write(f"fence_kvmlab: unknown action {action!r}\n")
        return 1
    for step in steps[action]:
        try:
            answer = bmc(path, f"{step} {target}")
        except OSError as exc:
            sys.stderr.write(f"fence_kvmlab: power controller: {exc}\n")
            return 1
        if answer.startswith("error"):
            sys.stderr.write(f"fence_kvmlab: {step} {target}: {answer}\n")
            return 1
        if step == "status":
            sys.stdout.write(f"Status: {answer.upper()}\n")
            return 0 if answer == "on" else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
