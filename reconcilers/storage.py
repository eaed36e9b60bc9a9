"""Storage: every VM on GFS2 starts after, and runs with, the GFS2 clone; dlm -> clvmd -> gfs2.

Which VMs: every `VirtualDomain` resource of the CIB, listed under `vms` or not, that depends
on a storage entry -- because the file says so (`vms[].storage`), because its `config` lies
under the mountpoint, or because a disk libvirt reports for its running domain does. Removing a
VM from the file releases its placement, never its storage safety.
For each dependency: `order <storage> then <vm>` (Mandatory, symmetrical) and `colocation <vm>
with <storage> INFINITY` -- unless an equivalent constraint already exists under any id
(pcs-made ones count). Without quorum a GFS2 node must freeze, not stop (stopping would need
DLM, which needs quorum), hence no-quorum-policy=freeze unless the file sets it.

Safety is removed only on positive evidence (docs/architecture.md, section 7): a kvm-warden
storage constraint goes when its resource is gone, when its storage entry left the file, or when
a fresh listing of the running domain shows no disk under the mountpoint while its `config` is
not under it either. Missing evidence -- a stopped VM (VirtualDomain's domains are transient),
libvirtd down, a stale agent, an offline node -- keeps it, and `plan` says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.model.actions import (
    OWNED_PREFIX,
    AddColocation,
    AddOrder,
    Plan,
    RemoveConstraint,
    SetProperty,
    Subject,
)
from controller.model.context import Context
from controller.model.desired import DesiredState, Storage
from controller.model.index import ClusterIndex
from controller.model.observed import domain_active
from controller.model.vms import cluster_vms, declared, domain_names, vm_resources
from reconcilers.base import PlanBuilder, Scope, under

NAME = "storage"
SCOPE: Scope = "vms"  # an incremental pass hands it the dirty VMs (ctx.scope, ctx.in_scope())
OWNED = (f"{OWNED_PREFIX}order-", f"{OWNED_PREFIX}colo-")


def order_id(first: str, then: str) -> str:
    return f"{OWNED_PREFIX}order-{first}-{then}"


def colo_id(rsc: str, with_rsc: str) -> str:
    return f"{OWNED_PREFIX}colo-{rsc}-{with_rsc}"


def vm_dependencies(
    index: ClusterIndex, desired: DesiredState, only: frozenset[str] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """VM resource id -> [(storage name, why)] for every storage entry it depends on."""
    declared = {vm.resource_id: vm for vm in desired.vms}
    listed = {rid: vm.name for rid, vm in declared.items()}
    deps: dict[str, list[tuple[str, str]]] = {}
    # An incremental pass looks at its VMs' resources alone (not all 5,000).
    rids = vm_resources(index, desired) if only is None else \
        sorted(set(cluster_vms(index, desired, only).values()))
    for rid in rids:
        names = domain_names(rid, listed)
        vm = declared.get(rid)
        found: dict[str, str] = {s: "declared in the desired state" for s in (vm.storage if vm else ())}
        cfg = index.configured.get(rid)
        config_path = cfg.params.get("config") if cfg else None
        disks = [d for n in names for d in index.domain_disks.get(n, ())]
        for st in desired.storage:
            if st.name in found:
                continue
            if config_path and under(config_path, st.mountpoint):
                found[st.name] = f"its domain XML {config_path} is under {st.mountpoint}"
            else:
                disk = next((d for d in disks if under(d, st.mountpoint)), None)
                if disk is not None:
                    found[st.name] = f"its disk {disk} is under {st.mountpoint}"
        deps[rid] = sorted(found.items())
    return deps


def disproved(index: ClusterIndex, listed: Mapping[str, str], rid: str,
              st: Storage) -> str | None:
    """Positive evidence that VM `rid` does not need storage `st`, said in words; else None."""
    cfg = index.configured.get(rid)
    config_path = cfg.params.get("config") if cfg else None
    if config_path and under(config_path, st.mountpoint):
        return None
    running = index.running.get(rid, ())
    if len(running) != 1 or rid in index.migrating or rid in index.transitioning:
        return None
    node = running[0]
    for name in domain_names(rid, listed):
        dom = index.listed.get(name, {}).get(node)
        if dom is not None and domain_active(dom) and dom.disks:
            if any(under(d, st.mountpoint) for d in dom.disks):
                return None
            return (f"{node}'s libvirt lists {name} running with no disk under {st.mountpoint} "
                    f"({', '.join(dom.disks)}), and its config is not under it")
    return None


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired, only = ctx.index, ctx.desired, ctx.scope
    wanted: set[str] = set()

    def need(first: str, then: str, why: str) -> None:
        """`then` must start after `first` and run where `first` runs."""
        if first not in index.exists or then not in index.exists:
            return
        if index.observed.cib is not None and then not in index.configured:
            return  # an orphan (deleted, still stopping): a constraint cannot name it
        oid, cid = order_id(first, then), colo_id(then, first)
        wanted.update((oid, cid))
        if (first, then) not in index.order_pairs:
            out.actions.append(AddOrder(reconciler=NAME, id=oid, first=first, then=then,
                                        why=f"{then} needs {first}: {why}"))
        if (then, first) not in index.colocation_pairs:
            out.actions.append(AddColocation(reconciler=NAME, id=cid, rsc=then, with_rsc=first,
                                             score="INFINITY", why=f"{then} needs {first}: {why}"))

    storage = desired.storage_by_name()
    for rid, deps in vm_dependencies(index, desired, only).items():
        for name, why in deps:
            need(storage[name].resource, rid, why)
    if only is not None:
        return out.build()
    for st in desired.storage:
        chain = [st.resource, *st.requires]  # nearest first: gfs2 <- clvmd <- dlm
        for then, first in zip(chain, chain[1:], strict=False):
            need(first, then, f"the {st.name} chain")

    if desired.storage and "no-quorum-policy" not in desired.cluster.properties:
        current = index.properties.get("no-quorum-policy")
        if current != "freeze":
            out.actions.append(SetProperty(
                reconciler=NAME, name="no-quorum-policy", value="freeze",
                why=f"GFS2 storage is declared; no-quorum-policy is {current or '(default: stop)'}"))

    remove_on_evidence(out, index, desired, wanted)
    return out.build()


def remove_on_evidence(out: PlanBuilder, index: ClusterIndex, desired: DesiredState,
                       wanted: set[str]) -> None:
    """Plan the removal of kvm-warden's own storage constraints nothing asks for -- only where
    there is positive evidence that the safety they give is not needed; report the rest."""
    by_resource = {st.resource: st for st in desired.storage}
    listed = declared(desired)
    chain_members = {r for st in desired.storage for r in (st.resource, *st.requires)}
    owned: list[tuple[str, str, str]] = []  # (id, storage side, dependent side)
    owned += [(cid, c.first or "", c.then or "") for cid, c in index.order.items()]
    owned += [(cid, c.with_rsc or "", c.rsc or "") for cid, c in index.colocation.items()]
    for cid, first, then in sorted(owned):
        if not cid.startswith(OWNED) or cid in wanted:
            continue
        why: str | None
        if first not in index.exists or then not in index.exists:
            gone = then if then not in index.exists else first
            why = f"{gone} no longer exists"
        elif first not in chain_members:
            why = f"no storage entry of the desired state names {first} any more"
        elif then in chain_members:
            why = "the desired storage chain no longer asks for it"
        else:
            st = by_resource.get(first)
            why = disproved(index, listed, then, st) if st is not None else (
                f"{first} is no longer a storage resource of the desired state")
        if why is None:
            out.find("storage-kept", "info", Subject(name=cid),
                     f"kept {cid}: nothing proves {then} no longer needs {first} (it is not "
                     "declared, and no fresh listing of its running domain disproves a disk on "
                     "the storage)")
            continue
        out.actions.append(RemoveConstraint(reconciler=NAME, id=cid, rsc=then, why=why))
