"""Listing domains through libvirt and reading what matters from their XML.

Disks tell the storage reconciler which VMs live on GFS2; graphics give the console a person
reaches through an `ssh -L` tunnel. Read-only: a VM under Pacemaker's control is never changed
through libvirt.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from lxml import etree

from controller.model.errors import ParseError, ToolError
from controller.model.observed import Domain, HostInfo
from probes.xmlparse import parse_document

# virDomainState numbering (libvirt-domain.h), as the names virsh prints.
STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}
# virDomainPausedReason (libvirt-domain.h), as `virsh domstate --reason` names them: why a
# running guest is frozen -- an I/O error and a watchdog are faults nobody else reports.
PAUSED_REASONS = ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
                  "from-snapshot", "shutdown", "snapshot", "api-error", "starting-up",
                  "postcopy", "postcopy-failed")


def paused_reason(code: int) -> str:
    return PAUSED_REASONS[code] if 0 <= code < len(PAUSED_REASONS) else str(code)


def parse_domain_xml(xml: str | bytes, *, source: str = "domain XML") -> Domain:
    """The facts kvm-warden reads from a domain's XML; the state comes from libvirt's API."""
    data = xml.encode() if isinstance(xml, str) else xml
    root = parse_document(data, source=source)
    if root.tag != "domain":
        raise ParseError("not a libvirt domain (expected <domain>)", source=source,
                         element=str(root.tag))
    name = root.findtext("name")
    if not name:
        raise ParseError("missing <name>", source=source, element="domain")
    disks: list[str] = []
    vnc_port: int | None = None
    vnc_listen: str | None = None
    devices = root.find("devices")
    if devices is not None:
        for disk in devices.iter("disk"):
            src = disk.find("source")
            if src is not None:
                path = src.get("file") or src.get("dev") or src.get("name")
                if path:
                    disks.append(path)
        for g in devices.iter("graphics"):
            if g.get("type") in ("vnc", "spice") and vnc_port is None:
                try:
                    port = int(g.get("port", "-1"))
                except ValueError:
                    port = -1
                vnc_port = port if port > 0 else None
                vnc_listen = g.get("listen") or _listen(g)
    os_type = root.find("os/type")
    return Domain(name=name, uuid=root.findtext("uuid") or "", disks=tuple(disks),
                  vnc_port=vnc_port, vnc_listen=vnc_listen, vcpus=_int(root.findtext("vcpu")),
                  memory_kib=_kib(root.find("currentMemory")) or _kib(root.find("memory")),
                  machine=(os_type.get("machine") or None) if os_type is not None else None)


def parse_machines(capabilities: str | bytes, *, source: str = "capabilities") -> tuple[str, ...]:
    """Every machine type the host's emulators offer (`virsh capabilities`: each guest arch's
    <machine> names and their canonical="..." forms), sorted."""
    data = capabilities.encode() if isinstance(capabilities, str) else capabilities
    root = parse_document(data, source=source)
    names: set[str] = set()
    for m in root.iter("machine"):
        for name in (m.text, m.get("canonical")):
            if name and name.strip():
                names.add(name.strip())
    return tuple(sorted(names))


def os_release(root: str = "/") -> str:
    """The node's release as /etc/os-release and /etc/debian_version say ("Debian 13.8")."""
    import os.path

    name = ""
    try:
        with open(os.path.join(root, "etc/os-release"), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "NAME":
                    name = value.strip('"').split(" GNU/Linux")[0]
    except OSError:
        pass
    try:
        with open(os.path.join(root, "etc/debian_version"), encoding="ascii") as f:
            version = f.read().strip()
    except OSError:
        version = ""
    return f"{name or 'Debian'} {version}".strip() if version else name


def _version(n: int) -> str:
    """libvirt's packed version (major * 1,000,000 + minor * 1,000 + release) in words."""
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}" if n > 0 else ""


# libvirt's memory units (formatdomain.html, "Memory Allocation"); KiB when none is given
UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 10**6, "m": 2**20,
         "mib": 2**20, "gb": 10**9, "g": 2**30, "gib": 2**30, "tb": 10**12, "t": 2**40,
         "tib": 2**40}


def _int(text: str | None) -> int | None:
    try:
        value = int((text or "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _kib(e: etree._Element | None) -> int | None:
    if e is None:
        return None
    value, unit = _int(e.text), UNITS.get((e.get("unit") or "KiB").lower())
    return None if value is None or unit is None else value * unit // 1024


def host_info(uri: str, conn: Any = None) -> HostInfo | None:
    """The host's CPUs and memory (virNodeGetInfo); None when libvirt does not answer."""
    import libvirt

    own = conn is None
    try:
        if own:
            conn = libvirt.openReadOnly(uri)
        info = conn.getInfo()  # [model, memory MiB, cpus, MHz, NUMA nodes, sockets, cores, threads]
        extra = _host_extras(conn, uri)
    except libvirt.libvirtError:
        return None
    finally:
        if own and conn is not None:
            conn.close()
    return HostInfo(cpus=int(info[2]), memory_kib=int(info[1]) * 1024, **extra)


def _host_extras(conn: Any, uri: str) -> dict[str, Any]:
    """Machine types and versions: what a rolling upgrade must know of a host. A driver that
    does not say (the test driver's versions) leaves them unknown, never wrong."""
    import libvirt

    out: dict[str, Any] = {}
    try:
        out["machines"] = parse_machines(conn.getCapabilities(), source=f"{uri} capabilities")
    except (libvirt.libvirtError, ParseError):
        pass
    out["os"] = os_release()
    for key, call in (("libvirt_version", conn.getLibVersion), ("qemu_version", conn.getVersion)):
        try:
            out[key] = _version(int(call()))
        except (libvirt.libvirtError, TypeError, ValueError):
            pass
    return out


def _listen(g: etree._Element) -> str | None:
    el = g.find("listen")
    return el.get("address") if el is not None else None


def list_domains(uri: str, conn: Any = None) -> dict[str, Domain]:
    """Every domain on one libvirtd, with its state and XML facts. Raises ToolError if down.

    With `conn`, that open connection is used (and left open)."""
    import libvirt

    own = conn is None
    try:
        if own:
            conn = libvirt.openReadOnly(uri)
        domains = conn.listAllDomains()
    except libvirt.libvirtError as exc:
        raise ToolError(["libvirt", uri], f"cannot list domains: {exc}") from None
    try:
        out: dict[str, Domain] = {}
        for dom in domains:
            try:
                state, reason = dom.state()
                facts = parse_domain_xml(dom.XMLDesc(0), source=f"{uri} {dom.name()}")
                cpu_ns = int(dom.info()[4]) if state in (1, 3) else None  # running, paused
                cpu_at = time.time() if cpu_ns is not None else None
            except (libvirt.libvirtError, ParseError):
                continue  # vanished while listing, or XML we cannot read: next listing retries
            persistent: bool | None
            autostart: bool | None
            try:  # what enrollment checks: a domain libvirt itself starts at boot
                persistent, autostart = bool(dom.isPersistent()), bool(dom.autostart())
            except libvirt.libvirtError:
                persistent = autostart = None
            out[facts.name] = msgspec.structs.replace(
                facts, state=STATES.get(state, "nostate"),
                reason=paused_reason(reason) if state == 3 else "",
                persistent=persistent, autostart=autostart, cpu_time_ns=cpu_ns,
                cpu_at=cpu_at)
        return out
    finally:
        if own:
            conn.close()
