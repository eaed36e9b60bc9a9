"""The VM overview: which VM runs where, whether that is what was asked, and its console.

One typed row per VM, shared by `status`, `/status`, the HTML page and the per-VM metrics;
`StatusDoc` is what `/status` serves (its JSON keys are a contract: docs/reference.md, "/status").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from controller.model.actions import Finding
from controller.model.desired import DesiredState, Vm
from controller.model.names import conventional_name, conventional_resource
from controller.model.observed import Domain, ObservedState, Resource, domain_active
from controller.model.stack import failure_text
from controller.model.vms import is_vm_agent


class FindingBrief(msgspec.Struct, frozen=True, kw_only=True):
    """A finding as a VM's row shows it."""

    kind: str
    severity: str
    message: str
    reason: str = ""  # the finding's machine reason, where its kind has more than one cause


# Every word of VmRow.health, worst first.
HEALTH_WORDS = ("failed", "blocked", "outside", "unmanaged", "orphaned", "paused", "migrating",
                "pending", "stopped", "absent", "ok")


class DomainOn(msgspec.Struct, frozen=True, kw_only=True):
    """What one node's libvirt says of a VM's domain it lists active."""

    node: str
    state: str  # libvirt's: running, paused, blocked, pmsuspended, crashed
    reason: str = ""  # why, when libvirt says (a pause's: user, ioerror, migration, ...)

    def __str__(self) -> str:
        return f"{self.node}:{self.state}" + (f"({self.reason})" if self.reason else "")


class VmRow(msgspec.Struct, frozen=True, kw_only=True):
    """One VM, the one row type of `status`, `/status`, the web view and the per-VM metrics."""

    vm: str
    resource: str
    nodes: tuple[str, ...]
    state: str  # Pacemaker's role, or "absent" when the resource does not exist
    desired_state: str | None
    desired_node: str | None
    drift: tuple[str, ...]
    # why the file itself keeps the VM off its preferred node, in words (its node drained)
    desired_note: str | None = None
    vnc_port: int | None
    console: str | None
    # what libvirt says on each node that lists the domain active -- Pacemaker's role counts
    # a paused guest as Started
    libvirt: tuple[DomainOn, ...] = ()
    findings: tuple[FindingBrief, ...] = ()  # the last pass's findings about its resource
    # The truth in one word, worst first: failed | blocked | unmanaged | orphaned | paused |
    # migrating | pending | stopped | absent (no resource) | ok. Pacemaker's role alone says
    # Started for a VM whose monitor failed and for a paused guest.
    health: str = "ok"
    flags: tuple[str, ...] = ()  # every condition that holds, in words ("FAILED on kvm2", ...)
    failures: tuple[str, ...] = ()  # crm_mon's failed actions: operation, node, rc, when
    fail_counts: Mapping[str, int] = msgspec.field(default_factory=dict)  # node -> fail-count


class NodeRow(msgspec.Struct, frozen=True, kw_only=True):
    """A node, its state in Pacemaker and in the file, and the VMs still on it (drain progress)."""

    name: str
    online: bool
    standby: bool
    maintenance: bool
    desired_state: str | None  # None: the file declares no state for this node
    vms: tuple[str, ...]


class DesiredInfo(msgspec.Struct, frozen=True, kw_only=True):
    path: str | None
    generation: int
    valid: bool
    errors: tuple[str, ...] = ()


class PassSummary(msgspec.Struct, frozen=True, kw_only=True):
    actions: tuple[str, ...]
    findings: tuple[str, ...]
    error: str | None
    duration_s: float


class StatusDoc(msgspec.Struct, frozen=True, kw_only=True):
    vms: tuple[VmRow, ...] = ()
    nodes: tuple[NodeRow, ...] = ()
    desired: DesiredInfo | None = None
    last_pass: PassSummary | None = None


def state_text(r: VmRow) -> str:
    """What the STATE column shows: Pacemaker's role, led by the worse truth when there is one
    ("FAILED (Started)", "PAUSED (Started)")."""
    if r.health in ("ok", "stopped", "absent"):
        return r.state
    return f"{r.health.upper()} ({r.state})"


def node_rows(observed: ObservedState, desired: DesiredState | None) -> tuple[NodeRow, ...]:
    states = desired.cluster.node_states() if desired else {}
    on: dict[str, list[str]] = {}
    for r in observed.status.resources:
        if is_vm_agent(r.agent) and r.active:
            for n in r.nodes:
                on.setdefault(n, []).append(r.id)
    return tuple(
        NodeRow(name=n.name, online=n.online, standby=n.standby, maintenance=n.maintenance,
                desired_state=states.get(n.name), vms=tuple(sorted(on.get(n.name, ()))))
        for n in sorted(observed.status.nodes.values(), key=lambda n: n.name))


def _truth(inst: tuple[Resource, ...], libvirt: tuple[DomainOn, ...], nodes: tuple[str, ...]
           ) -> tuple[str, tuple[str, ...]]:
    """(health, flags) from crm_mon's flags and libvirt's states, worst first."""
    flags: list[str] = []
    words: list[str] = []

    def add(word: str, flag: str) -> None:
        words.append(word)
        flags.append(flag)

    for r in inst:
        where = ", ".join(r.nodes) or "no node"
        if r.failed:
            add("failed", f"FAILED on {where}")
        if r.blocked:
            add("blocked", f"blocked on {where} (Pacemaker will not act on it: stop failed?)")
        if not r.managed:
            add("unmanaged", "unmanaged (Pacemaker does not act on it)")
        if r.orphaned:
            add("orphaned", "orphaned (running, no longer in the configuration)")
        if r.migrating:
            add("migrating", f"migrating ({where})")
        elif r.pending:
            add("pending", f"{r.pending} on {where}")
    for entry in libvirt:
        if entry.state == "paused":
            add("paused", f"paused in libvirt ({entry})")
    if not inst and libvirt:
        add("outside", "outside the cluster: runs in libvirt ("
            + ", ".join(map(str, libvirt)) + ") with no Pacemaker resource")
    if not words:
        return ("absent" if not inst else "ok" if nodes else "stopped"), ()
    return min(words, key=HEALTH_WORDS.index), tuple(dict.fromkeys(flags))


def vm_rows(observed: ObservedState, desired: DesiredState | None,
            findings: Iterable[Finding] = (),
            fail_counts: Mapping[tuple[str, str], int] | None = None,
            drift_of: Mapping[str, tuple[str, ...]] | None = None) -> tuple[VmRow, ...]:
    """`drift_of`: resource id -> what the reconcilers still want for it, or what keeps it
    from the file (engine/pipeline.drift): the one drift definition, shown as it is."""
    about: dict[str, list[FindingBrief]] = {}
    for f in findings:
        if f.rsc is not None:
            about.setdefault(f.rsc, []).append(
                FindingBrief(kind=f.kind, severity=f.severity, message=f.message,
                             reason=f.reason))
    wanted = {vm.resource_id: vm for vm in (desired.vms if desired else ())}
    seen = _Seen(observed, {(node, name): d for node, doms in observed.domains.items()
                            for name, d in doms.items()},
                 fail_counts or {}, desired.cluster.node_states() if desired else {})
    return tuple(_row(seen, rid, wanted.get(rid), tuple(about.get(rid, ())),
                      tuple((drift_of or {}).get(rid, ())))
                 for rid in _row_ids(observed, wanted))


@dataclass(frozen=True)
class _Seen:
    """What every row reads: the observation, its domains by (node, name), fail-counts by
    (resource, node), and the file's node states."""
    observed: ObservedState
    domains: Mapping[tuple[str, str], Domain]
    fail_counts: Mapping[tuple[str, str], int]
    node_states: Mapping[str, str]


def _row_ids(observed: ObservedState, wanted: Mapping[str, Vm]) -> list[str]:
    """Every VM resource, every VM the file names, and the domains running on a cluster node
    that neither names (shown as running outside the cluster: enrollment candidates)."""
    ids = [r.id for r in observed.status.resources if is_vm_agent(r.agent)]
    ids += [rid for rid in wanted if rid not in ids]
    names = {wanted[r].name if r in wanted else conventional_name(r) for r in ids}
    ids += sorted({conventional_resource(name) for node, doms in observed.domains.items()
                   if node not in observed.stale for name, d in doms.items()
                   if name not in names and domain_active(d)})
    return ids


def _row(seen: _Seen, rid: str, vm: Vm | None, findings: tuple[FindingBrief, ...],
         drift: tuple[str, ...]) -> VmRow:
    observed, status = seen.observed, seen.observed.status
    inst = status.instances(rid)
    nodes = tuple(sorted({n for r in inst if r.active for n in r.nodes}))
    name = vm.name if vm else conventional_name(rid)
    desired_node = vm.placement.prefer if vm else None
    node = nodes[0] if len(nodes) == 1 else None
    dom = seen.domains.get((node, name)) if node else None
    port = dom.vnc_port if dom else None
    libvirt = tuple(
        DomainOn(node=n, state=d.state, reason=d.reason)
        for (n, dn), d in sorted(seen.domains.items())
        if dn == name and n not in observed.stale and d.state not in ("shutoff", "unknown"))
    health, flags = _truth(inst, libvirt, nodes)
    cfg = observed.cib.resources.get(rid) if observed.cib is not None else None
    threshold = cfg.meta.get("migration-threshold") if cfg is not None else None
    counts = {n: c for (r, n), c in seen.fail_counts.items() if r == rid and c}
    flags += tuple(  # how close Pacemaker is to banning it from a node
        f"fail-count {c} on {n}" + (f" of migration-threshold {threshold}" if threshold else "")
        for n, c in sorted(counts.items()))
    wants_stopped = (vm is not None and vm.wants_stopped) or (
        cfg is not None and (cfg.meta.get("target-role") or "").lower() == "stopped")
    starts = [f.node for f in status.failures if f.resource == rid and f.task == "start"]
    if inst and not nodes and starts and not wants_stopped and health in ("stopped", "ok"):
        # Stopped after its starts failed: Pacemaker no longer flags it, it is not fine.
        health = "failed"
        flags = (f"cannot start: its start failed on {', '.join(sorted(starts))}", *flags)
    return VmRow(
        health=health, flags=flags,
        failures=tuple(failure_text(f) for f in status.failures if f.resource == rid),
        fail_counts=counts, libvirt=libvirt, findings=findings,
        vm=name, resource=rid, nodes=nodes, state=inst[0].role if inst else "absent",
        desired_state=vm.state if vm else None, desired_node=desired_node, drift=drift,
        vnc_port=port,
        desired_note=(f"{desired_node} is drained in the file: elsewhere until it is back"
                      if desired_node and seen.node_states.get(desired_node) == "standby"
                      else None),
        # No user: ssh uses the operator's own (~/.ssh/config), not one kvm-warden guesses.
        console=(f"ssh -L {port}:127.0.0.1:{port} {node}  "
                 f"# then vncviewer localhost:{port - 5900}") if port and node else None,
    )
