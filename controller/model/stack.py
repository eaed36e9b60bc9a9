"""The cluster's own stack as the web view shows it beside the VMs: the storage chain's clones
on every node (dlm -> clvmd -> GFS2, from the file's `storage` entries, then any other clone),
the fence devices and each node's last fencing, and the failed actions of everything that is
not a VM. Read from crm_mon's output alone: what Pacemaker says, not what kvm-warden guesses."""

from __future__ import annotations

import msgspec

from controller.model.desired import DesiredState
from controller.model.observed import ClusterStatus, Failure, FenceEvent, Resource
from controller.model.pcmk import fencing_enabled, ocf_rc
from controller.model.vms import is_vm_agent


class Cell(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    state: str  # started | stopped | failed | blocked | pending | unmanaged | offline
    text: str = ""  # the whole truth for a tooltip ("FAILED on kvm3", "Stopped")


class CloneRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    storage: str | None = None  # the file's storage entry this clone belongs to
    cells: tuple[Cell, ...] = ()
    ok: bool = True  # started wherever its node can run it


class FenceDevice(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    agent: str
    state: str  # started | stopped | failed
    nodes: tuple[str, ...] = ()


class StackDoc(msgspec.Struct, frozen=True, kw_only=True):
    clones: tuple[CloneRow, ...] = ()
    fencing_enabled: bool = True
    fence_devices: tuple[FenceDevice, ...] = ()
    last_fencing: tuple[FenceEvent, ...] = ()  # the newest fencing of each node
    failures: tuple[str, ...] = ()  # failed actions of resources that are not VMs


def failure_text(f: Failure) -> str:
    """One failed action in words, as every face shows it."""
    return (f"{f.task or 'operation'} on {f.node}: {ocf_rc(f.rc)} (rc {f.rc}, {f.status})"
            + (f" at {f.last_rc_change}" if f.last_rc_change else "")
            + (f": {f.exitreason}" if f.exitreason else ""))


def _state(r: Resource) -> str:
    if r.failed:
        return "failed"
    if r.blocked:
        return "blocked"
    if r.pending:
        return "pending"
    if not r.managed:
        return "unmanaged"
    return "started" if r.active else "stopped"


def _clone_of(status: ClusterStatus, r: Resource) -> str | None:
    """The clone a resource instance belongs to (through a group inside it, too)."""
    parent = r.parent
    while parent is not None:
        c = status.collectives.get(parent)
        if c is None:
            return None
        if c.kind == "clone":
            return c.id
        parent = c.parent
    return None


def _clone_row(status: ClusterStatus, clone: str, storage: str | None,
               members: list[Resource]) -> CloneRow:
    cells = []
    for name in sorted(status.nodes):
        node = status.nodes[name]
        here = [r for r in members if name in r.nodes]
        worst = min((_state(r) for r in here), key=_RANK.index,
                    default="stopped" if node.online else "offline")
        text = ", ".join(f"{r.id} {r.role}" + (" FAILED" if r.failed else "") for r in here)
        cells.append(Cell(node=name, state=worst, text=text or (
            "not running here" if node.online else f"{name} is offline")))
    can_run = {n for n, st in status.nodes.items()
               if st.online and not st.standby and not st.unclean}
    ok = all(c.state == "started" for c in cells if c.node in can_run)
    return CloneRow(id=clone, storage=storage, cells=tuple(cells), ok=ok)


_RANK = ("failed", "blocked", "pending", "unmanaged", "stopped", "offline", "started")


def stack(status: ClusterStatus, desired: DesiredState | None) -> StackDoc:
    members: dict[str, list[Resource]] = {}
    for r in status.resources:
        clone = _clone_of(status, r)
        if clone is not None and not is_vm_agent(r.agent):
            members.setdefault(clone, []).append(r)
    chain: list[tuple[str, str]] = []  # (clone, storage entry), dlm first
    for st in desired.storage if desired is not None else ():
        for rid in (*reversed(st.requires), st.resource):
            if rid not in (c for c, _ in chain):
                chain.append((rid, st.name))
    named = {c for c, _ in chain}
    clones = [_clone_row(status, c, s, members.get(c, [])) for c, s in chain]
    clones += [_clone_row(status, c, None, rs) for c, rs in sorted(members.items())
               if c not in named]
    devices = tuple(
        FenceDevice(id=r.id, agent=r.agent, state=_state(r), nodes=r.nodes)
        for r in status.resources if r.agent.startswith("stonith:"))
    last: dict[str, FenceEvent] = {}
    for e in status.fencing:  # crm_mon lists the newest first
        last.setdefault(e.target, e)
    vms = {r.id for r in status.resources if is_vm_agent(r.agent)}
    return StackDoc(
        clones=tuple(clones), fencing_enabled=fencing_enabled(status.properties),
        fence_devices=devices, last_fencing=tuple(last[t] for t in sorted(last)),
        failures=tuple(f"{f.resource}: {failure_text(f)}" for f in status.failures
                       if f.resource not in vms))
