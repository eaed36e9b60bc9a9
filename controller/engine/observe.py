"""Reading the cluster: every source returns observations that the store folds, and nothing else.

A full pass reads Pacemaker (crm_mon + the CIB, re-read only when its configuration version
changed) and, where no agent reports them, a local libvirt; the bus delivers the rest. The
pass then plans on the store's one ObservedState.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.engine.store import Store
from controller.logs import logger
from controller.model.errors import ToolError
from controller.model.events import DomainSeen, Observation, PacemakerSeen
from controller.model.observed import ObservedState
from probes.libvirt.domains import host_info, list_domains
from probes.pacemaker.read import CibCache, read_status


@dataclass(frozen=True)
class Reading:
    observations: tuple[Observation, ...]
    cib: bytes | None  # the CIB the pass's patch is computed against
    at: float


Source = Callable[[], Reading]
CONTROLLER = "controller"  # the `source` of the controller's own readings in the store


def pacemaker_source(cib_file: str | None) -> Source:
    """Pacemaker's state, live or from a CIB file (`CIB_file=`)."""
    cache = CibCache(cib_file)

    def read() -> Reading:
        cib, raw = cache.get()
        status = read_status(cib_file)
        return Reading((PacemakerSeen(status=status, cib=cib),), raw, time.time())

    return read


def with_local_libvirt(source: Source, uri: str, node: str) -> Source:
    """`run --no-agent --libvirt-uri`: this node's domains listed directly on each full pass."""
    log = logger(component="libvirt")

    def read() -> Reading:
        reading = source()
        try:
            seen = DomainSeen(node=node, domains=tuple(list_domains(uri).values()),
                              host=host_info(uri))
        except ToolError as exc:
            log.warning("libvirt_unavailable", error=str(exc))
            seen = DomainSeen(node=node, connected=False)  # unknown, not "no domains"
        return Reading((*reading.observations, seen), reading.cib, reading.at)

    return read


def observe_once(cib_file: str | None) -> tuple[ObservedState, bytes]:
    """One reading of Pacemaker, folded like any other (plan, status): the state, and the
    CIB bytes that are the base of any patch."""
    reading = pacemaker_source(cib_file)()
    store = Store()
    store.observe(reading.observations, CONTROLLER, reading.at)
    return store.state, reading.cib or b""
