"""Storage: every VM on GFS2 starts after, and runs with, the GFS2 clone; dlm -> clvmd -> gfs2.

A VM depends on a storage entry when the file says so (`storage:`), when its VirtualDomain
`config` lies under the mountpoint, or when a disk that libvirt reports for its domain does.
For each dependency: `order <storage> then <vm>` (Mandatory) and `colocation <vm> with <storage>
INFINITY` -- unless an equivalent constraint already exists under any id (pcs-made ones count).
Without quorum a GFS2 node must freeze, not stop (stopping would need DLM, which needs quorum),
hence no-quorum-policy=freeze unless the file sets it.
"""

from __future__ import annotations

from controller.model.actions import AddColocation, AddOrder, Plan, SetProperty
from controller.model.context import Context
from controller.model.desired import DesiredState
from controller.model.index import ClusterIndex
from reconcilers.base import PlanBuilder, remove_stale, under

NAME = "storage"
OWNED = ("warden-order-", "warden-colo-")


def order_id(first: str, then: str) -> str:
    return f"warden-order-{first}-{then}"


def colo_id(rsc: str, with_rsc: str) -> str:
    return f"warden-colo-{rsc}-{with_rsc}"


def vm_dependencies(
    index: ClusterIndex, desired: DesiredState, only: frozenset[str] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """VM resource id -> [(storage name, why)] for every storage entry it depends on."""
    deps: dict[str, list[tuple[str, str]]] = {}
    for vm in desired.vms:
        if only is not None and vm.name not in only:
            continue
        rid = vm.resource_id
        found: dict[str, str] = {s: "declared in the desired state" for s in vm.storage}
        cfg = index.configured.get(rid)
        config_path = cfg.params.get("config") if cfg else None
        disks = index.domain_disks.get(vm.name, ())
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


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index, desired, only = ctx.index, ctx.desired, ctx.scope
    wanted: set[str] = set()

    def need(first: str, then: str, why: str) -> None:
        """`then` must start after `first` and run where `first` runs."""
        if first not in index.exists or then not in index.exists:
            return
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

    remove_stale(out, index, OWNED, wanted, "no longer needed by any declared storage")
    return out.build()
