"""Domain XML files on the shared storage, as this node reads them, and writing one there.

Enrollment (reconcilers/enroll.py) needs proof that VirtualDomain's `config` file is the same
on every node that may run the VM (resource-agents issue 1231: a node without it "finds" the VM
stopped and Pacemaker starts a second copy). Each agent hashes the `*.xml` files of its
configured directories (`--config-dir`) and publishes them; a file is re-read only when its
size or mtime changes. The agent also writes a running domain's XML into one of those
directories for the controller (`export_domain_xml`), never over an existing file.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controller.logs import logger
from controller.model.errors import ParseError, ToolError
from controller.model.events import ConfigFilesSeen
from controller.model.observed import ConfigFile
from controller.threads import Background
from probes.libvirt.domains import parse_domain_xml

MAX_FILES = 4096  # per node: far more VMs than a cluster of this kind runs
MAX_BYTES = 1024 * 1024  # a domain XML is a few KiB
# VirtualDomain's own test (resource-agents, VirtualDomain_getconfig): the name must be found
# by a line match, `<name>` and `</name>` on one line with nothing but blanks around them.
_NAME_LINE = re.compile(rb"^[ \t]*<name>[^<]*</name>[ \t]*$", re.MULTILINE)


def read_config_file(path: Path) -> ConfigFile:
    try:
        if path.stat().st_size > MAX_BYTES:
            return ConfigFile(path=str(path), error=f"larger than {MAX_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        return ConfigFile(path=str(path), error=f"cannot read: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        dom = parse_domain_xml(data, source=str(path))
    except ParseError as exc:
        return ConfigFile(path=str(path), sha256=digest, error=str(exc))
    return ConfigFile(path=str(path), sha256=digest, domain=dom.name, disks=dom.disks,
                      name_on_own_line=_NAME_LINE.search(data) is not None)


class ConfigScanner:
    """Hashes the XML files of some directories, re-reading only what changed."""

    def __init__(self, dirs: Sequence[str]):
        self.dirs = [Path(d) for d in dirs]
        self._cache: dict[Path, tuple[tuple[int, int], ConfigFile]] = {}

    def scan(self) -> tuple[ConfigFile, ...]:
        out: list[ConfigFile] = []
        seen: dict[Path, tuple[tuple[int, int], ConfigFile]] = {}
        for d in self.dirs:
            try:
                names = sorted(e.name for e in os.scandir(d) if e.name.endswith(".xml"))
            except OSError:
                continue  # not mounted (yet): nothing is there to vouch for
            for name in names[:MAX_FILES - len(out)]:
                path = d / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                stamp = (st.st_size, st.st_mtime_ns)
                cached = self._cache.get(path)
                cf = cached[1] if cached is not None and cached[0] == stamp \
                    else read_config_file(path)
                seen[path] = (stamp, cf)
                out.append(cf)
        self._cache = seen
        return tuple(out)


class ConfigWatcher:
    def __init__(self, node: str, dirs: Sequence[str],
                 publish: Callable[[ConfigFilesSeen], object], seconds: float = 2.0):
        self.node, self.publish, self.seconds = node, publish, seconds
        self.dirs = tuple(os.path.normpath(d) for d in dirs)
        self.scanner = ConfigScanner(dirs)
        self.last: ConfigFilesSeen | None = None
        self._wake = threading.Event()
        self._bg = Background("config-probe", self._run)

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        self._bg.start()

    def stop(self) -> None:
        self._bg.stop()
        self._wake.set()

    def poke(self) -> None:
        """Scan now (a file was just written here)."""
        self._wake.set()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                seen = ConfigFilesSeen(node=self.node, dirs=self.dirs, files=self.scanner.scan())
                if seen != self.last:
                    self.last = seen
                    self.publish(seen)
            except Exception:  # noqa: BLE001 - an odd directory must not end the probe
                logger(component="config-probe").exception("config_probe_failed")
            self._wake.wait(self.seconds)
            self._wake.clear()


class ExportRefused(Exception):
    """The XML was not written, and why (said to the controller as is)."""


def inside(path: str, dirs: Sequence[str]) -> bool:
    p = os.path.normpath(path)
    return any(os.path.dirname(p) == os.path.normpath(d) for d in dirs)


def export_domain_xml(conn: Any, domain: str, path: str, dirs: Sequence[str]) -> str:
    """Write a running domain's definition to `path` (in one of `dirs`) for VirtualDomain;
    return its sha256. An existing file is never replaced: the same content is success,
    different content a refusal."""
    import libvirt

    if not inside(path, dirs) or not path.endswith(".xml"):
        raise ExportRefused(f"{path} is not an .xml file directly in a configuration directory "
                            f"of this agent ({', '.join(dirs) or 'none configured'})")
    try:
        dom = conn.lookupByName(domain)
        # MIGRATABLE: without what only this run of the domain has (ids, runtime ports,
        # aliases), the definition VirtualDomain can create it from on any node.
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    except libvirt.libvirtError as exc:
        raise ToolError(["libvirt", "dumpxml", domain], str(exc)) from None
    data = (xml if xml.endswith("\n") else xml + "\n").encode()
    if _NAME_LINE.search(data) is None:  # libvirt prints it so; say so if it ever does not
        raise ExportRefused(f"libvirt's XML of {domain} has no <name> line VirtualDomain finds")
    if parse_domain_xml(data, source=f"libvirt {domain}").name != domain:
        raise ExportRefused(f"libvirt's XML of {domain} names another domain")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)  # atomic, and fails if the file exists: never overwritten
        except FileExistsError:
            if target.read_bytes() != data:
                raise ExportRefused(f"{path} exists with other content: not overwritten") \
                    from None
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()
