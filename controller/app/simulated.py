"""The embedded default cluster for `make demo` and `kvm-warden run --simulate`.

A real 3-node CIB held in a work directory and driven through Pacemaker's own tools with
CIB_file=: `crm_simulate -S` plays the part of the cluster's scheduler and executor after each
change. Each node's domains are served by libvirt's real `test:///` driver from a node file
written from what Pacemaker runs there, so the console/disk facts come through libvirt's API.
GFS2/DLM themselves cannot run on this kernel; their resources are only scheduled.

libvirt's test driver reports no CPU time that moves, so each guest's is made up here: the
cores `loads.json` in the work directory gives it ({"web01": 1.5}; absent: idle), counted
from zero on the node it runs on (a migrated guest is a new QEMU process) -- what balancing by
load reads on a real cluster.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape

import msgspec

from controller import commands
from controller.engine.observe import Reading
from controller.model.errors import ToolError
from controller.model.events import ConfigFilesSeen, DomainSeen, PacemakerSeen
from controller.model.names import conventional_name
from controller.model.observed import Domain, HostInfo
from controller.model.vms import is_vm_agent
from probes.libvirt.domains import host_info, list_domains
from probes.pacemaker.cib import parse_cib
from probes.pacemaker.read import read_status

NODES = ("kvm1", "kvm2", "kvm3")
XML_DIR = "/kvm/storage/xml"  # the embedded cluster's VirtualDomain configs live here


def host(cpus: int = 8) -> str:
    """A simulated host: `cpus` CPUs, 16 GiB (libvirt's test driver reads <cpu> and <memory>,
    KiB)."""
    return (f"<cpu><mhz>2400</mhz><model>x86_64</model><active>{cpus}</active><max>{cpus}</max>"
            f"<nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>"
            "</cpu><memory>16777216</memory>")


def embedded_cib() -> bytes:
    return resources.files("controller.app.embedded").joinpath("cib.xml").read_bytes()


def embedded_desired() -> str:
    return resources.files("controller.app.embedded").joinpath("desired.yaml").read_text()


class SimulatedCluster:
    def __init__(self, workdir: Path, cpus: int = 8):
        self.workdir = workdir
        self.host = host(cpus)
        self.cib_file = workdir / "cib.xml"
        self.vnc_ports: dict[str, int] = {}
        self._cpu: dict[tuple[str, str], tuple[float, float]] = {}  # (node, vm) -> (ns, at)

    def create(self) -> None:
        """A fresh cluster: the embedded CIB with all nodes up, settled by the scheduler."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        seed = self.workdir / "seed.xml"
        seed.write_bytes(embedded_cib())
        argv = ["crm_simulate", "-x", str(seed), "-S", "-O", str(self.cib_file)]
        for n in NODES:
            argv[3:3] = ["-u", n]
        commands.run(argv, timeout=60)
        self.write_domains()

    def settle(self) -> None:
        """What the cluster does after a CIB change: the scheduler runs its transition."""
        out = self.workdir / "settled.xml"
        commands.run(["crm_simulate", "-x", str(self.cib_file), "-S", "-O", str(out)], timeout=60)
        shutil.move(out, self.cib_file)
        self.write_domains()

    def write_domains(self) -> None:
        status = read_status(str(self.cib_file))
        per_node: dict[str, list[str]] = {n: [] for n in NODES}
        for r in status.resources:
            if is_vm_agent(r.agent) and r.active:
                for n in r.nodes:
                    per_node.setdefault(n, []).append(conventional_name(r.id))
        for name in sorted({d for ds in per_node.values() for d in ds}):
            self.vnc_ports.setdefault(name, 5900 + len(self.vnc_ports))
        for node, doms in per_node.items():
            body = "".join(self._domain_xml(d) for d in sorted(doms))
            (self.workdir / f"{node}.xml").write_text(f"<node>{self.host}{body}</node>\n")

    def _domain_xml(self, name: str) -> str:
        n = escape(name)
        return (
            f"<domain type='test'><name>{n}</name><memory>2097152</memory><vcpu>2</vcpu>"
            "<os><type>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><source file='/kvm/storage/images/{n}.qcow2'/>"
            "<target dev='vda' bus='virtio'/></disk>"
            f"<graphics type='vnc' port='{self.vnc_ports[name]}' autoport='no' listen='127.0.0.1'/>"
            "</devices></domain>"
        )

    def hosts(self) -> dict[str, HostInfo | None]:
        return {n: host_info(f"test://{self.workdir / (n + '.xml')}") for n in NODES}

    def domains(self, now: float | None = None) -> dict[str, dict[str, Domain]]:
        out: dict[str, dict[str, Domain]] = {}
        for node in NODES:
            try:
                out[node] = list_domains(f"test://{self.workdir / (node + '.xml')}")
            except ToolError:
                continue
        return self._with_cpu(out, time.time() if now is None else now)

    def loads(self) -> dict[str, float]:
        path = self.workdir / "loads.json"
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()} \
            if path.exists() else {}

    def _with_cpu(self, listed: dict[str, dict[str, Domain]], now: float
                  ) -> dict[str, dict[str, Domain]]:
        """Each running guest's CPU time as its load (loads.json) makes it grow."""
        load, seen = self.loads(), {}
        for node, doms in listed.items():
            for name, dom in doms.items():
                ns, at = self._cpu.get((node, name), (0.0, now))
                seen[(node, name)] = (ns + load.get(name, 0.0) * (now - at) * 1e9, now)
                doms[name] = msgspec.structs.replace(
                    dom, cpu_time_ns=int(seen[(node, name)][0]), cpu_at=now)
        self._cpu = seen  # a guest gone from a node starts from zero if it comes back
        return listed

    def read(self) -> Reading:
        """The engine's Source: Pacemaker's view of the CIB file and every node's domains."""
        now = time.time()  # the reading's time is the guests' CPU time's: exact loads
        raw = self.cib_file.read_bytes()
        cib = parse_cib(raw, source=str(self.cib_file))
        status = read_status(str(self.cib_file))
        domains = self.domains(now)
        hosts = self.hosts()
        seen = tuple(DomainSeen(node=n, connected=n in domains, host=hosts.get(n),
                                domains=tuple(domains.get(n, {}).values())) for n in NODES)
        # Each simulated node's agent reads the cluster's XML directory, where no file is
        # written yet: an enrollment's first step is the export from libvirt.
        configs = tuple(ConfigFilesSeen(node=n, dirs=(XML_DIR,)) for n in NODES)
        return Reading((PacemakerSeen(status=status, cib=cib), *seen, *configs), raw, now)
