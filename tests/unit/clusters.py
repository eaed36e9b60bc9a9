"""Small observed clusters built in memory, for the pure reconciler and ledger tests.

Field values follow crm_mon's XML API and the CIB schema (the parser tests hold the parsers to
the real tools' output); the expectations in the tests come from the spec, not from the code.
"""

from __future__ import annotations

from controller.model.context import Context
from controller.model.desired import parse_desired
from controller.model.index import ClusterIndex, build_index
from controller.model.observed import (
    CibConfig,
    ClusterStatus,
    ColocationConstraint,
    Constraints,
    Domain,
    LocationConstraint,
    Node,
    ObservedState,
    OrderConstraint,
    Resource,
    ResourceConfig,
)

NODES = {n: Node(name=n, online=True) for n in ("kvm1", "kvm2", "kvm3")}


def index(vms: dict[str, str | None], *, meta: dict[str, dict[str, str]] | None = None,
          config: dict[str, str] | None = None, properties: dict[str, str] | None = None,
          location: tuple[LocationConstraint, ...] = (), order: tuple[OrderConstraint, ...] = (),
          colocation: tuple[ColocationConstraint, ...] = (), gfs2: bool = False,
          domains: dict[str, dict[str, Domain]] | None = None,
          stale: frozenset[str] = frozenset(), nodes: dict[str, Node] | None = None) -> ClusterIndex:
    """VMs `vm-NAME` running on the node given (None: stopped), plus an optional GFS2 clone."""
    res = [Resource(id=f"vm-{n}", agent="ocf:heartbeat:VirtualDomain",
                    role="Started" if node else "Stopped", active=node is not None,
                    nodes=(node,) if node else ()) for n, node in vms.items()]
    cfg = {f"vm-{n}": ResourceConfig(
        id=f"vm-{n}", kind="primitive", agent="ocf:heartbeat:VirtualDomain",
        params={"config": (config or {}).get(n, f"/etc/libvirt/qemu/{n}.xml")},
        meta=(meta or {}).get(n, {})) for n in vms}
    if gfs2:
        for rid in ("dlm", "clvmd", "gfs2_res01"):
            cfg[f"{rid}-clone"] = ResourceConfig(id=f"{rid}-clone", kind="clone")
            cfg[rid] = ResourceConfig(id=rid, kind="primitive", parent=f"{rid}-clone",
                                      agent="ocf:pacemaker:Dummy")
            res += [Resource(id=rid, parent=f"{rid}-clone", agent="ocf:pacemaker:Dummy",
                             role="Started", active=True, nodes=(n,)) for n in NODES]
    return build_index(ObservedState(
        status=ClusterStatus(dc="kvm1", with_quorum=True, nodes=nodes or NODES,
                             resources=tuple(res)),
        domains=domains or {}, stale=stale,
        cib=CibConfig(properties=properties or {}, resources=cfg, nodes=tuple(NODES),
                      constraints=Constraints(location=location, order=order,
                                              colocation=colocation))))


def ctx(idx: ClusterIndex, desired_yaml: str, scope: frozenset[str] | None = None) -> Context:
    return Context(index=idx, desired=parse_desired(desired_yaml), scope=scope, now=1000.0)
