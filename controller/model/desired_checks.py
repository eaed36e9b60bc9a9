"""The desired file's checks across its entries (what one field's type cannot say): names
unique, every name used declared, no contradiction, the upgrade's order. They read the parsed
YAML before the model is built, so that each problem names its file:line like the model's own
errors (controller/model/desired.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from controller.model.names import RESOURCE_ID, conventional_resource, did_you_mean

Path_ = tuple[str | int, ...]
# VirtualDomain's own parameters kvm-warden sets itself when it enrolls a VM (a VM's own
# fields: its `params` may not set them)
ENROLL_PARAMS = frozenset({"config", "hypervisor", "migration_transport"})


def cross_check(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """Every problem across entries, with where it is."""
    return _cross_check(data) + _check_upgrade(data)


def field_path(loc: Path_) -> str:
    """A location as the file's words: vms[2].placement.prefer."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out



def _items(data: Any, key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    seq = data.get(key) if isinstance(data, dict) else None
    if isinstance(seq, list):
        for i, item in enumerate(seq):
            if isinstance(item, dict):
                yield i, item


def _strs(value: Any) -> list[tuple[int, str]]:
    if isinstance(value, list):
        return [(i, v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def _strs_keys(value: Any) -> list[str]:
    return [k for k in value if isinstance(k, str)] if isinstance(value, dict) else []


def _cross_check(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """References inside the file: names unique, every name used is declared, no contradictions."""
    out, storage_names, vm_names = _unique_names(data)
    known_nodes = _known_nodes(data)
    allowed_of: dict[str, tuple[Path_, frozenset[str]]] = {}
    for i, vm in _items(data, "vms"):
        out += _vm_references(i, vm, storage_names, vm_names)
        placement = vm.get("placement")
        if not isinstance(placement, dict):
            continue
        out += _vm_placement(i, placement, known_nodes)
        allowed = [n for _, n in _strs(placement.get("allowed"))]
        name = vm.get("name")
        if isinstance(name, str) and allowed:
            allowed_of[name] = (("vms", i, "placement", "allowed"), frozenset(allowed))
    return out + _impossible_anti_affinity(data, allowed_of)


def _unique_names(data: dict[str, Any]) -> tuple[list[tuple[Path_, str]], set[str], set[str]]:
    """Storage and VM names each once, every resource id once: the problems, the storage
    names and the VM names."""
    out: list[tuple[Path_, str]] = []
    storage_names: set[str] = set()
    resource_ids: dict[str, Path_] = {}

    def claim_resource(rid: Any, loc: Path_) -> None:
        if isinstance(rid, str):
            if rid in resource_ids:
                out.append((loc, f"resource {rid!r} is already used at {field_path(resource_ids[rid])}"))
            else:
                resource_ids[rid] = loc

    for i, st in _items(data, "storage"):
        name = st.get("name")
        if isinstance(name, str):
            if name in storage_names:
                out.append((("storage", i, "name"), f"duplicate storage name {name!r}"))
            storage_names.add(name)
        claim_resource(st.get("resource"), ("storage", i, "resource"))
    vm_names: set[str] = set()
    for i, vm in _items(data, "vms"):
        name = vm.get("name")
        if isinstance(name, str):
            if name in vm_names:
                out.append((("vms", i, "name"), f"duplicate VM name {name!r}"))
            vm_names.add(name)
            rid = vm.get("resource", conventional_resource(name))
            if "resource" not in vm and not RESOURCE_ID.fullmatch(rid):
                out.append((("vms", i, "name"), f"the resource id {rid!r} derived from the name "
                                                "is not a valid Pacemaker id: give `resource:`"))
            claim_resource(rid, ("vms", i, "resource" if "resource" in vm else "name"))
    return out, storage_names, vm_names


def _vm_references(i: int, vm: dict[str, Any], storage_names: set[str], vm_names: set[str]
                   ) -> list[tuple[Path_, str]]:
    """A VM's storage and anti-affinity name declared entries; fields that are its own."""
    out: list[tuple[Path_, str]] = []
    name = vm.get("name")
    for j, ref in _strs(vm.get("storage")):
        if ref not in storage_names:
            out.append((("vms", i, "storage", j), f"unknown storage {ref!r}"))
    for j, ref in _strs(vm.get("anti_affinity")):
        if ref == name:
            out.append((("vms", i, "anti_affinity", j), "a VM cannot be anti-affine to itself"))
        elif ref not in vm_names:
            out.append((("vms", i, "anti_affinity", j), f"unknown VM {ref!r}"))
    if vm.get("keep_running") is True and vm.get("state") != "absent":
        out.append((("vms", i, "keep_running"), "only means something with state: absent"))
    for key in _strs_keys(vm.get("params")):
        if key in ENROLL_PARAMS:
            out.append((("vms", i, "params", key), f"set {key} as the VM's own field"))
    return out


def _vm_placement(i: int, placement: dict[str, Any], known_nodes: set[str] | None
                  ) -> list[tuple[Path_, str]]:
    """A VM's placement: a preferred node it may run on, nodes the cluster has."""
    out: list[tuple[Path_, str]] = []
    allowed = [n for _, n in _strs(placement.get("allowed"))]
    prefer = placement.get("prefer")
    if isinstance(prefer, str) and "allowed" in placement and allowed and prefer not in allowed:
        out.append(
            (("vms", i, "placement", "prefer"), f"node {prefer!r} is not in placement.allowed")
        )
    if isinstance(placement.get("allowed"), list) and not placement["allowed"]:
        out.append((("vms", i, "placement", "allowed"), "must name at least one node"))
    if known_nodes is not None:
        for j, n in _strs(placement.get("allowed")):
            if n not in known_nodes:
                out.append((("vms", i, "placement", "allowed", j), f"unknown node {n!r}"))
        if isinstance(prefer, str) and prefer not in known_nodes:
            out.append((("vms", i, "placement", "prefer"), f"unknown node {prefer!r}"))
    return out


def _impossible_anti_affinity(data: dict[str, Any],
                              allowed_of: dict[str, tuple[Path_, frozenset[str]]]
                              ) -> list[tuple[Path_, str]]:
    """Two anti-affine VMs that may only run on the same single node can never both run."""
    out: list[tuple[Path_, str]] = []
    for i, vm in _items(data, "vms"):
        name = vm.get("name")
        if not isinstance(name, str) or name not in allowed_of:
            continue
        for j, ref in _strs(vm.get("anti_affinity")):
            if ref in allowed_of and ref != name:
                mine, theirs = allowed_of[name][1], allowed_of[ref][1]
                if len(mine | theirs) == 1:
                    out.append((("vms", i, "anti_affinity", j),
                                f"conflict: {name!r} and {ref!r} are anti-affine but both may "
                                f"only run on {next(iter(mine))!r}"))
    return out


def _known_nodes(data: dict[str, Any]) -> set[str] | None:
    """The node names `cluster.nodes` lists (None: the file lists none)."""
    cluster = data.get("cluster")
    nodes = cluster.get("nodes") if isinstance(cluster, dict) else None
    if not isinstance(nodes, list):
        return None
    return ({n for _, n in _strs(nodes)}
            | {n["name"] for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str)})


def _check_upgrade(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """The upgrade's order: each node once, and a node of the cluster when the file lists them."""
    up = data.get("upgrade")
    if not isinstance(up, dict):
        return []
    known, seen = _known_nodes(data), set()
    out: list[tuple[Path_, str]] = []
    for j, n in _strs(up.get("order")):
        if n in seen:
            out.append((("upgrade", "order", j), f"node {n!r} is already in the order"))
        elif known is not None and n not in known:
            hint = did_you_mean(n, known)
            out.append((("upgrade", "order", j), f"unknown node {n!r}{hint}"))
        seen.add(n)
    return out
