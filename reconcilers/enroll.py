"""Enrollment and retirement: a running VM put under the cluster without a restart, and one
taken out (`state: absent`), step by step, each step decided afresh from what is observed.

Enrollment of a VM the file declares with a `config` path but that has no resource yet:
  1. every check below passes (else one `enroll-refused` finding listing all that fail, and
     no change); if no node has the XML file yet, the agent of the node the domain runs on
     writes it there first (ExportConfig), and the checks wait for every node to see it;
  2. one patch: the VirtualDomain primitive, unmanaged and marked `kvm-warden-hold=enroll`,
     with a location on the node it runs on and its storage order/colocation -- Pacemaker
     probes it on every node and, unmanaged, starts and stops nothing;
  3. once every node's probe has answered: found running where the domain runs and nowhere
     else -> ManageVm (its preview must predict nothing for it, like every patch); anything
     else -> the primitive and its constraints go again, the domain left running (rollback).
Retirement: with `keep_running` the resource is held unmanaged, then removed together with
kvm-warden's constraints while stop-orphan-resources=false keeps Pacemaker from stopping the
orphan, whose history is then forgotten (`crm_resource --refresh`) before that property goes;
without it run_state stops the VM first and the stopped resource is removed. Constraints
somebody else made on it are reported and block the retirement: never removed.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.model.actions import (
    AddColocation,
    AddOrder,
    AnyAction,
    CreateVm,
    ExportConfig,
    ForgetResource,
    HoldVm,
    ManageVm,
    Plan,
    ReleaseOrphans,
    RemoveConstraint,
    RemoveVm,
    SetLocation,
    Subject,
    owned,
)
from controller.model.context import Context
from controller.model.desired import DesiredState, Vm
from controller.model.index import ClusterIndex
from controller.model.observed import ConfigFile, SourceKey, domain_active
from controller.model.pcmk import HOLD_MARK
from reconcilers.base import Cause, PlanBuilder, Scope, under
from reconcilers.storage import colo_id, order_id

NAME = "enroll"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())
ENROLL_PREFIX = "warden-enroll-"
ROLLBACK_HOLD_SECONDS = 900.0  # a rolled-back enrollment is not tried again sooner
OCF_RUNNING, OCF_NOT_RUNNING = 0, 7


def enroll_location(rid: str) -> str:
    return f"{ENROLL_PREFIX}{rid}"


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired = ctx.index, ctx.desired
    for vm in ctx.in_scope():
        cfg = index.configured.get(vm.resource_id)
        if vm.state == "absent":
            _retire(out, index, vm)
        elif cfg is None and vm.config is not None:
            _enroll(out, ctx, vm)
        elif cfg is not None and cfg.meta.get(HOLD_MARK) == "enroll":
            _hand_over(out, index, vm)
        elif cfg is not None and enroll_location(vm.resource_id) in index.location \
                and vm.placement.prefer and HOLD_MARK not in cfg.meta:
            out.actions.append(RemoveConstraint(
                reconciler=NAME, id=enroll_location(vm.resource_id), rsc=vm.resource_id,
                why=f"{vm.name} is enrolled; placement.prefer {vm.placement.prefer} takes over"))
    if ctx.scope is None:
        _orphans(out, index, desired)
    return out.build()


# -- enrollment ------------------------------------------------------------------------------
def _may_run(index: ClusterIndex, vm: Vm) -> list[str]:
    return sorted(vm.placement.allowed or index.node_names)


def _fresh_listing(index: ClusterIndex, node: str) -> bool:
    obs = index.observed
    return node in obs.domains and node not in obs.stale \
        and SourceKey("libvirt", node) in obs.observed_at


def _active_on(index: ClusterIndex, name: str) -> list[str]:
    return sorted(n for n, d in index.listed.get(name, {}).items() if domain_active(d))


def _files(index: ClusterIndex, path: str, nodes: list[str]) -> dict[str, ConfigFile | None]:
    cf = index.observed.config_files
    return {n: cf.get(n, {}).get(path) for n in nodes}


def _vouching(index: ClusterIndex, path: str, nodes: list[str]
              ) -> tuple[list[str], list[tuple[str, tuple[str, ...]]], list[str]]:
    """(nodes whose agents read a directory holding `path`, nodes whose agents read none --
    with the directories they do read --, nodes whose agents have not said yet). Only the
    first can say the file is absent: for the others absence is not evidence."""
    dirs = index.observed.config_dirs
    unheard = [n for n in nodes if n not in dirs]
    blind = [(n, dirs[n]) for n in nodes if n in dirs and not any(under(path, d) for d in dirs[n])]
    heard = [n for n in nodes if n in dirs and n not in {b for b, _ in blind}]
    return heard, blind, unheard


def _removed_before(index: ClusterIndex, rid: str) -> list[Cause]:
    """A resource of this id deleted earlier that Pacemaker still handles: created again now,
    it would inherit the orphan's stop and its old probe results (a false rollback)."""
    orphan = sorted({n for r in index.observed.status.resources if r.id == rid and r.orphaned
                     for n in r.nodes})
    if orphan:
        return [Cause("OrphanStopping", f"Pacemaker still stops the removed resource {rid} "
                      f"(an orphan on {', '.join(orphan)})")]
    cib = index.observed.cib
    if cib is not None and rid in cib.histories:
        return [Cause("OrphanHistory", f"the CIB still holds the history of a removed resource "
                      f"{rid}; Pacemaker forgets it once stopped (by hand: `crm_resource "
                      f"--refresh -r {rid}`)")]
    return []


def checks(index: ClusterIndex, desired: DesiredState, vm: Vm
           ) -> tuple[list[Cause], list[Cause]]:
    """(refusals, waits) for enrolling `vm`: what is wrong, and what is not known yet."""
    assert vm.config is not None
    refuse: list[Cause] = []
    wait: list[Cause] = []
    nodes = _may_run(index, vm)
    wait.extend(_removed_before(index, vm.resource_id))
    offline = [n for n in nodes if not (index.nodes.get(n) and index.nodes[n].online)]
    if offline:
        wait.append(Cause("NodeOffline", f"{', '.join(offline)} offline: their view of "
                          f"{vm.config} cannot be checked"))
    unheard = [n for n in nodes if n not in offline and not _fresh_listing(index, n)]
    if unheard:
        wait.append(Cause("AgentSilent", f"no fresh report from the agent on {', '.join(unheard)}"))
    active = _active_on(index, vm.name)
    _domain_checks(index, vm, active, refuse, wait)
    mounts = _storage_checks(index, desired, vm, refuse)
    disks = _file_checks(index, vm, [n for n in nodes if n not in offline], active, refuse, wait)
    outside = sorted(d for d in disks if not any(under(d, m) for m in mounts))
    if mounts and outside:
        refuse.append(Cause("DiskNotShared", f"disk {', '.join(outside)} is not on its shared "
                            f"storage ({', '.join(mounts)}): a live migration would fail"))
    return refuse, wait


def _domain_checks(index: ClusterIndex, vm: Vm, active: list[str], refuse: list[Cause],
                   wait: list[Cause]) -> None:
    """The running domain: listed in full, on one node, not autostarted by libvirt."""
    # A domain known only from a lifecycle event: its disks and autostart come with the
    # listing the agent makes right after.
    unlisted = [n for n in active if index.listed[vm.name][n].persistent is None]
    if unlisted:
        wait.append(Cause("NotListed", f"no full listing of {vm.name} from "
                          f"{', '.join(unlisted)} yet"))
    if len(active) > 1:
        refuse.append(Cause("RunsTwice", f"domain {vm.name} runs on {len(active)} nodes "
                            f"({', '.join(active)})"))
    autostarted = sorted(n for n, d in index.listed.get(vm.name, {}).items() if d.autostart)
    if autostarted:
        refuse.append(Cause("Autostart", f"libvirt autostarts {vm.name} on "
                            f"{', '.join(autostarted)} (outside the cluster): `virsh autostart "
                            f"--disable {vm.name}` there"))
    if vm.migration_transport is None:
        refuse.append(Cause("NoMigrationTransport", "migration_transport is not set (ssh, tcp "
                            "or tls: how Pacemaker's live migration reaches the other node)"))


def _storage_checks(index: ClusterIndex, desired: DesiredState, vm: Vm, refuse: list[Cause]
                    ) -> list[str]:
    """Its storage declared and existing, its config under it; returns the mountpoints."""
    assert vm.config is not None
    storage = desired.storage_by_name()
    mounts = [storage[s].mountpoint for s in vm.storage if s in storage]
    if not mounts:
        refuse.append(Cause("NoStorage", "no storage declared for it: its config and disks "
                            "must be on shared storage (`storage:`)"))
    for s in vm.storage:
        if s in storage and storage[s].resource not in index.exists:
            refuse.append(Cause("StorageMissing", f"storage {s}'s resource "
                                f"{storage[s].resource} does not exist"))
    if mounts and not any(under(vm.config, m) for m in mounts):
        refuse.append(Cause("ConfigNotShared", f"config {vm.config} is not under its storage "
                            f"({', '.join(mounts)})"))
    return mounts


def _file_checks(index: ClusterIndex, vm: Vm, online: list[str], active: list[str],
                 refuse: list[Cause], wait: list[Cause]) -> set[str]:
    """The XML file as the agents of the online nodes that may run it report it: the same
    everywhere, of this domain, usable by VirtualDomain. Returns every disk it and the
    running domain name."""
    assert vm.config is not None
    heard, blind, unheard_files = _vouching(index, vm.config, online)
    if unheard_files:
        wait.append(Cause("FilesUnreported", "no report of the XML files from the agent on "
                          f"{', '.join(unheard_files)} yet"))
    for n, dirs in blind:
        refuse.append(Cause("ConfigUnseen", f"the agent on {n} reads no directory holding "
                            f"{vm.config} (its --config-dir: {', '.join(dirs) or 'none'}): it "
                            "cannot vouch for the file"))
    files = _files(index, vm.config, heard)
    present = {n: f for n, f in files.items() if f is not None}
    disks: set[str] = {d for n in active for d in index.listed[vm.name][n].disks}
    if not present:
        if not active:
            refuse.append(Cause("NoSource", f"{vm.config} exists on no node and {vm.name} runs "
                                "nowhere to take it from"))
        return disks
    missing = sorted(n for n, f in files.items() if f is None)
    if missing:
        refuse.append(Cause("ConfigMissing", f"{vm.config} is missing on {', '.join(missing)} "
                            f"(present on {', '.join(sorted(present))}): every node that may "
                            "run it needs it"))
    for n, f in sorted(present.items()):
        if f.error:
            refuse.append(Cause("ConfigUnreadable", f"{vm.config} on {n}: {f.error}"))
    digests = {f.sha256 for f in present.values() if not f.error}
    if len(digests) > 1:
        refuse.append(Cause("ConfigDiffers", f"{vm.config} differs between nodes (" + ", ".join(
            f"{n}: {f.sha256[:12]}" for n, f in sorted(present.items())) + ")"))
    one = next((f for f in present.values() if not f.error), None)
    if one is not None:
        if one.domain != vm.name:
            refuse.append(Cause("WrongDomain", f"{vm.config} defines domain {one.domain!r}, "
                                f"not {vm.name!r}"))
        if not one.name_on_own_line:
            refuse.append(Cause("NameNotOnOwnLine", f"{vm.config}: <name> is not on a line of "
                                "its own (VirtualDomain finds it by a line match: every start "
                                "would fail)"))
        disks |= set(one.disks)
    return disks


def _enroll(out: PlanBuilder, ctx: Context, vm: Vm) -> None:
    index, desired = ctx.index, ctx.desired
    rid = vm.resource_id
    assert vm.config is not None
    back = ctx.ledger.rolled_back.get(rid)
    if back is not None and ctx.now - back < ROLLBACK_HOLD_SECONDS:
        out.find("enroll-rolled-back", "warning", Subject(rid),
                 f"{vm.name}: its enrollment was rolled back {ctx.now - back:.0f} s ago; tried "
                 f"again {ROLLBACK_HOLD_SECONDS - (ctx.now - back):.0f} s from now")
        return
    refuse, wait = checks(index, desired, vm)
    if refuse:  # the reason: the first cause; the message: every one
        out.find("enroll-refused", "warning", Subject(rid),
                 f"{vm.name} is not enrolled, nothing was changed: "
                 + "; ".join(c.text for c in refuse), reason=refuse[0].reason)
        return
    if wait:
        out.find("enroll-waiting", "info", Subject(rid),
                 f"{vm.name}: enrollment waits: " + "; ".join(c.text for c in wait),
                 reason=wait[0].reason)
        return
    active = _active_on(index, vm.name)
    nodes = _may_run(index, vm)
    files = _files(index, vm.config, nodes)
    if all(f is None for f in files.values()):
        out.actions.append(ExportConfig(
            reconciler=NAME, node=active[0], domain=vm.name, path=vm.config,
            why=f"{vm.name} is to be enrolled; {vm.config} is on no node yet"))
        return
    where = active[0] if active else None
    meta = dict(vm.meta)
    if vm.state == "stopped":
        meta.setdefault("target-role", "Stopped")
    assert vm.migration_transport is not None
    unit = f"enroll:{rid}"  # the primitive with its location and storage, or nothing
    actions: list[AnyAction] = [CreateVm(
        reconciler=NAME, unit=unit, rsc=rid, domain=vm.name, config=vm.config, hypervisor=vm.hypervisor,
        migration_transport=vm.migration_transport, params=tuple(sorted(vm.params.items())),
        meta=tuple(sorted(meta.items())), node=where,
        why=(f"{vm.name} runs on {where} outside the cluster: created unmanaged there, so "
             "that Pacemaker's probes find it without restarting it") if where else
            f"{vm.name} is declared with config {vm.config} and runs nowhere")]
    if where is not None:
        actions.append(SetLocation(
            reconciler=NAME, unit=unit, id=enroll_location(rid), rsc=rid, node=where,
            score=str(desired.policy.prefer_score),
            why=f"{vm.name} stays on {where}, where it runs, when it is managed"))
    storage = desired.storage_by_name()
    for s in vm.storage:
        first = storage[s].resource
        why = f"{rid} needs {first}: declared in the desired state (with its creation)"
        actions.append(AddOrder(reconciler=NAME, unit=unit, id=order_id(first, rid),
                                first=first, then=rid, why=why))
        actions.append(AddColocation(reconciler=NAME, unit=unit, id=colo_id(rid, first), rsc=rid,
                                     with_rsc=first, score="INFINITY", why=why))
    out.actions.extend(actions)


def _hand_over(out: PlanBuilder, index: ClusterIndex, vm: Vm) -> None:
    """The primitive exists, held: manage it once the probes agree, roll back if they do not."""
    rid = vm.resource_id
    loc = index.location.get(enroll_location(rid))
    where = loc.node if loc is not None else None
    results = {n: rc for r, n, rc in (index.observed.cib.probes if index.observed.cib else ())
               if r == rid}
    online = sorted(n for n, node in index.nodes.items() if node.online)
    pending = [n for n in online if n not in results]
    running = sorted(n for n, rc in results.items() if rc == OCF_RUNNING)
    odd = sorted(f"{n}: rc {rc}" for n, rc in results.items()
                 if rc not in (OCF_RUNNING, OCF_NOT_RUNNING))
    wrong = odd or (running and running != [where]) or (not pending and running != [where])
    if wrong:
        why = (f"Pacemaker's probes found {vm.name} running on {', '.join(running) or 'no node'}"
               f" (expected {where})" + (f"; errors: {', '.join(odd)}" if odd else ""))
        out.find("enroll-rolled-back", "warning", Subject(rid, where),
                 f"{vm.name}: enrollment undone, the domain left running: {why}")
        out.actions.append(RemoveVm(reconciler=NAME, rsc=rid, keep_running=True, rollback=True,
                                    why=f"roll back the enrollment of {vm.name}: {why}"))
        return
    if pending or rid in index.transitioning:
        out.find("enroll-waiting", "info", Subject(rid),
                 f"{vm.name}: waiting for Pacemaker's probes on {', '.join(pending) or 'the'} "
                 "node(s)")
        return
    out.actions.append(ManageVm(
        reconciler=NAME, rsc=rid,
        why=f"every node's probe answered: {vm.name} runs on {where} and nowhere else"))


# -- retirement ------------------------------------------------------------------------------
def foreign_constraints(index: ClusterIndex, rid: str) -> list[str]:
    out = []
    for cid, loc in index.location.items():
        if loc.rsc == rid or any(rid in s.resources for s in loc.sets):
            out.append(cid)
    for cid, o in index.order.items():
        if rid in (o.first, o.then) or any(rid in s.resources for s in o.sets):
            out.append(cid)
    for cid, c in index.colocation.items():
        if rid in (c.rsc, c.with_rsc) or any(rid in s.resources for s in c.sets):
            out.append(cid)
    return sorted(c for c in out if not owned(c))


def _retire(out: PlanBuilder, index: ClusterIndex, vm: Vm) -> None:
    rid = vm.resource_id
    cfg = index.configured.get(rid)
    if cfg is None:
        return  # gone; a held orphan is forgotten by _orphans
    foreign = foreign_constraints(index, rid)
    if foreign:
        out.find("retire-blocked", "warning", Subject(rid),
                 f"{vm.name} stays in the cluster: constraints kvm-warden did not make name it "
                 f"({', '.join(foreign)}); remove them (`pcs constraint delete ID`) to retire it")
        return
    running = index.running.get(rid, ())
    if vm.keep_running and running:
        if HOLD_MARK not in cfg.meta:
            out.actions.append(HoldVm(reconciler=NAME, rsc=rid,
                                      why=f"{vm.name} leaves the cluster running on "
                                          f"{', '.join(running)}: unmanaged first"))
        elif rid not in index.transitioning:
            out.actions.append(RemoveVm(reconciler=NAME, rsc=rid, keep_running=True,
                                        why=f"{vm.name} leaves the cluster, running on "
                                            f"{', '.join(running)}"))
        return
    if running or rid in index.transitioning:
        return  # run_state has Pacemaker stop it first
    out.actions.append(RemoveVm(reconciler=NAME, rsc=rid,
                                why=f"{vm.name} leaves the cluster (stopped)"))


def _orphans(out: PlanBuilder, index: ClusterIndex, desired: DesiredState) -> None:
    """While kvm-warden's stop-orphan-resources=false is in place: forget the orphans it left
    running (their history), then lift it."""
    cib = index.observed.cib
    if cib is None or not cib.held_orphans:
        return
    ours = {vm.resource_id for vm in desired.vms}
    orphans = sorted({r.id for r in index.observed.status.resources if r.orphaned})
    mine = [r for r in orphans if r in ours and r not in index.configured]
    for rid in mine:
        out.actions.append(ForgetResource(
            reconciler=NAME, rsc=rid,
            why=f"{rid} was taken out of the cluster running: Pacemaker forgets it"))
    if not mine:
        out.actions.append(ReleaseOrphans(
            reconciler=NAME, why="no VM kvm-warden took out of the cluster is an orphan now"))


def acted_on(plan_: Plan) -> Mapping[str, str]:
    """The resources this pass creates, hands over or removes: other reconcilers leave them be
    for this pass (a constraint planned beside its resource's removal would dangle)."""
    return {a.rsc: type(a).__name__ for a in plan_.actions
            if isinstance(a, CreateVm | ManageVm | HoldVm | RemoveVm)}

