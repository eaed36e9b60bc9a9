"""Reading Pacemaker's state with its own tools (live, or offline on a CIB file)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from lxml import etree

from controller import commands
from controller.model.errors import ParseError, ToolError
from controller.model.observed import CibConfig, ClusterStatus, ConfigVersion
from controller.model.pcmk import HOLD_MARK
from probes.pacemaker.cib import parse_cib
from probes.pacemaker.crm_mon import parse_crm_mon
from probes.xmlparse import parse_document, to_int

CRM_MON_TIMEOUT = 60.0  # 2.2 s at 32 nodes x 5,000 VMs here; a hung crm_mon is killed


def crm_mon_argv() -> list[str]:
    return ["crm_mon", "--one-shot", "--inactive", "--output-as=xml"]


CRM_EX_DISCONNECT = 102  # Pacemaker's tools: no connection to the cluster's daemons
CRM_EX_UNAVAILABLE = 105


def _pacemaker(argv: list[str], cib_file: str | None, timeout: float) -> commands.Completed:
    """Run one of Pacemaker's tools, saying plainly when there is no cluster to ask (or no
    CIB file): their own words ("Could not connect to the CIB: No such device or address",
    or an exit status alone) do not tell an operator what to do."""
    if cib_file is not None and not Path(cib_file).exists():
        raise ParseError("no such file (a CIB file: cibadmin --query > FILE)", source=cib_file)
    try:
        return commands.run(argv, env=commands.tool_env(cib_file), timeout=timeout)
    except ToolError as exc:
        if cib_file is None and exc.returncode in (CRM_EX_DISCONNECT, CRM_EX_UNAVAILABLE):
            raise ToolError(argv, "cannot reach Pacemaker on this node (exit "
                            f"{exc.returncode}): is the cluster running here (`pcs status`)? "
                            "To work on a copy of the CIB, use --cib FILE",
                            returncode=exc.returncode) from None
        raise


def read_status(cib_file: str | None = None, *, timeout: float = CRM_MON_TIMEOUT) -> ClusterStatus:
    out = _pacemaker(crm_mon_argv(), cib_file, timeout)
    return parse_crm_mon(out.stdout, source=cib_file or "crm_mon")


CIB_TIMEOUT = 30.0


def query_cib(cib_file: str | None = None, *, timeout: float = CIB_TIMEOUT) -> bytes:
    """The whole CIB: the file itself offline, `cibadmin --query` live. The one CIB read."""
    if cib_file is not None:
        return _read_file(cib_file)
    return _pacemaker(["cibadmin", "--query"], None, timeout).stdout


def query_status(cib_file: str | None = None, *, timeout: float = CIB_TIMEOUT) -> bytes:
    """The CIB's status section alone (`cibadmin --query --scope status`): operation history."""
    return _pacemaker(["cibadmin", "--query", "--scope", "status"], cib_file, timeout).stdout


def cib_version(cib_file: str | None = None, *, timeout: float = CIB_TIMEOUT) -> CibVersion:
    """The CIB's version counters, from its root element alone (cheap at any size)."""
    out = _pacemaker(["cibadmin", "--query", "--xpath", "/cib", "--no-children"], cib_file,
                     timeout)
    root = parse_document(out.stdout, source="cibadmin --query --xpath /cib")
    return CibVersion(admin_epoch=root.get("admin_epoch"), epoch=root.get("epoch"),
                      num_updates=root.get("num_updates"))


def cib_source(cib_file: str | None) -> str:
    return cib_file or "cibadmin --query"


def read_cib(cib_file: str | None = None, *, timeout: float = CIB_TIMEOUT) -> CibConfig:
    return parse_cib(query_cib(cib_file, timeout=timeout), source=cib_source(cib_file))


def read_both(
    cib_file: str | None = None, *, timeout: float = CRM_MON_TIMEOUT
) -> tuple[ClusterStatus, CibConfig]:
    """crm_mon and the CIB together; crm_mon runs while we parse the CIB (two cores, half the wait)."""
    child = commands.start(crm_mon_argv(), env=commands.tool_env(cib_file))
    try:
        cib = read_cib(cib_file, timeout=timeout)
    except BaseException:
        child.kill()
        child.communicate()
        raise
    out = commands.finish(child, timeout=timeout)
    return parse_crm_mon(out.stdout, source=cib_file or "crm_mon"), cib


def config_version(root: etree._Element) -> ConfigVersion:
    """The configuration version of a parsed CIB (its root element's counters)."""
    return (to_int(root.get("admin_epoch", "0"), element="cib", attribute="admin_epoch",
                   source="cib"),
            to_int(root.get("epoch", "0"), element="cib", attribute="epoch", source="cib"))


class CibVersion(msgspec.Struct, frozen=True, kw_only=True):
    admin_epoch: str | None
    epoch: str | None
    num_updates: str | None

    @property
    def configuration(self) -> tuple[str | None, str | None]:
        """What changes with the configuration; num_updates moves with every status update."""
        return self.admin_epoch, self.epoch


class CibCache:
    """The CIB configuration, re-read only when its version changes.

    A live `cibadmin --query` of a 32 x 5,000 CIB costs about half a second and parsing it
    another 0.1 s; the root element alone says whether anything in the configuration changed
    (admin_epoch, epoch). Status updates only move num_updates and do not need a re-read:
    constraints and meta attributes live in the configuration.
    """

    def __init__(self, cib_file: str | None = None):
        self.cib_file = cib_file
        self.key: tuple[str | None, ...] | None = None
        self.cib: CibConfig | None = None
        self.raw: bytes = b""
        self.reads = 0

    def get(self) -> tuple[CibConfig, bytes]:
        version = cib_version(self.cib_file)
        key: tuple[str | None, ...] = version.configuration
        if self.cib is not None and (self.cib.histories or any(
                HOLD_MARK in r.meta for r in self.cib.resources.values())):
            # A VM held for enrollment (its probes' results) or a removed resource's history
            # (its forgetting) is status: read it as it comes.
            key = (*key, version.num_updates)
        if key != self.key or self.cib is None:
            raw = query_cib(self.cib_file)
            self.cib = parse_cib(raw, source=cib_source(self.cib_file))
            self.raw, self.key = raw, key
            self.reads += 1
        return self.cib, self.raw


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read: {exc.strerror}", source=path) from None


__all__ = ["read_status", "read_cib", "read_both", "query_cib", "cib_version", "CibCache",
           "ToolError", "ParseError"]
