"""Edits of a CIB tree, one per action: the XML Pacemaker (and pcs) would write for it.

Pure functions on an lxml tree; the pacemaker actuator turns the edited tree into one patch.
Element ids follow pcs' conventions (`<rsc>-meta_attributes-<name>`, `cib-bootstrap-options-...`)
so that the result reads like a hand-made configuration.
"""

from __future__ import annotations

from lxml import etree

from controller.model.actions import (
    AddColocation,
    AddOrder,
    AnyAction,
    Cleanup,
    CreateVm,
    ForgetResource,
    HoldVm,
    ManageVm,
    ReleaseOrphans,
    RemoveConstraint,
    RemoveVm,
    SetAllowedNodes,
    SetLocation,
    SetMeta,
    SetNodeAttribute,
    SetProperty,
    SetUtilization,
    owned,
)
from controller.model.pcmk import HOLD_MARK, ORPHANS_SET

RESOURCE_TAGS = ("primitive", "clone", "master", "group", "bundle")
# VirtualDomain's operations as its metadata recommends them (start/stop 90 s, migrations
# 120 s), monitored every 10 s.
VM_OPERATIONS = (("start", "0s", "90s"), ("stop", "0s", "90s"), ("monitor", "10s", "30s"),
                 ("migrate_to", "0s", "120s"), ("migrate_from", "0s", "120s"))


class EditError(Exception):
    """The CIB lacks what an action needs (e.g. the resource vanished since the plan)."""


def _serialize(el: etree._Element | None) -> str | None:
    return None if el is None else etree.tostring(el, encoding="unicode").strip()


class CibEditor:
    """Edits one CIB tree; indexes ids once so that a pass of hundreds of edits stays linear."""

    def __init__(self, root: etree._Element):
        self.root = root
        config = root.find("configuration")
        if config is None:
            raise EditError("the CIB has no <configuration>")
        self.config = config
        self.ids: set[str] = {str(el.get("id")) for el in root.iter() if el.get("id")}
        self.constraints = self._section("constraints")
        self.by_id = {str(el.get("id")): el for el in self.constraints if el.get("id")}
        self._resources: dict[str, etree._Element] | None = None

    def _section(self, name: str) -> etree._Element:
        sec = self.config.find(name)
        if sec is None:
            sec = etree.SubElement(self.config, name)
        return sec

    def _unique_id(self, wanted: str) -> str:
        ident, n = wanted, 0
        while ident in self.ids:
            n += 1
            ident = f"{wanted}-{n}"
        self.ids.add(ident)
        return ident

    def _resource(self, rsc: str) -> etree._Element:
        if self._resources is None:
            self._resources = {
                str(el.get("id")): el for el in self._section("resources").iter(*RESOURCE_TAGS)
            }
        res = self._resources.get(rsc)
        if res is None:
            raise EditError(f"resource {rsc} is not in the CIB")
        return res

    def _replace_constraint(self, new: etree._Element) -> tuple[str | None, str | None]:
        ident = str(new.get("id"))
        old = self.by_id.get(ident)
        before = _serialize(old)
        if old is not None:
            self.constraints.replace(old, new)
        else:
            self.constraints.append(new)
        self.by_id[ident] = new
        self.ids.update(str(el.get("id")) for el in new.iter() if el.get("id"))
        return before, _serialize(new)

    def _attributes(self, owner: etree._Element, tag: str, wanted_id: str) -> etree._Element:
        """The owner's first `meta_attributes`/`instance_attributes` block, made if missing."""
        block = next((b for b in owner if b.tag == tag), None)
        if block is None:
            block = etree.Element(tag, id=self._unique_id(wanted_id))
            owner.insert(0, block)
        return block

    def _set_nvpair(self, block: etree._Element, owner: str, name: str, value: str
                    ) -> tuple[str | None, str | None]:
        for nv in block.iter("nvpair"):
            if nv.get("name") == name:
                before = _serialize(nv)
                nv.set("value", value)
                return before, _serialize(nv)
        nv = etree.SubElement(block, "nvpair", id=self._unique_id(f"{owner}-{name}"), name=name,
                              value=value)
        return None, _serialize(nv)

    def _utilization(self, owner: etree._Element, wanted_id: str,
                     values: tuple[tuple[str, str], ...]) -> tuple[str | None, str | None]:
        """`<utilization>` after the element's attribute blocks (the schema's order)."""
        block = next((b for b in owner if b.tag == "utilization"), None)
        before = _serialize(block) if block is not None else None
        if block is None:
            block = etree.SubElement(owner, "utilization", id=self._unique_id(wanted_id))
            ops = next((b for b in owner if b.tag == "operations"), None)
            if ops is not None:  # a primitive: utilization comes before its operations
                ops.addprevious(block)
        for name, value in values:
            self._set_nvpair(block, str(block.get("id")), name, value)
        return before, _serialize(block)

    def _unset_property(self, name: str) -> tuple[str | None, str | None]:
        props = next((b for b in self._section("crm_config")
                      if b.get("id") == "cib-bootstrap-options"), None)
        for nv in (props.iter("nvpair") if props is not None else ()):
            if nv.get("name") == name:
                before = _serialize(nv)
                nv.getparent().remove(nv)  # type: ignore[union-attr]
                return before, None
        return None, None

    def _create_vm(self, a: CreateVm) -> tuple[str | None, str | None]:
        if a.rsc in self.ids:
            raise EditError(f"{a.rsc} already exists in the CIB")
        prim = etree.SubElement(self._section("resources"), "primitive", {
            "id": a.rsc, "class": "ocf", "provider": "heartbeat", "type": "VirtualDomain"})
        inst = etree.SubElement(prim, "instance_attributes", id=f"{a.rsc}-instance_attributes")
        for name, value in (("config", a.config), ("hypervisor", a.hypervisor),
                            ("migration_transport", a.migration_transport), *a.params):
            _nv(inst, str(inst.get("id")), name, value)
        meta = etree.SubElement(prim, "meta_attributes", id=f"{a.rsc}-meta_attributes")
        held = (("is-managed", "false"), (HOLD_MARK, "enroll")) if a.node else ()
        for name, value in (("allow-migrate", "true"), *a.meta, *held):
            _nv(meta, str(meta.get("id")), name, value)
        ops = etree.SubElement(prim, "operations")
        for name, interval, timeout in VM_OPERATIONS:
            etree.SubElement(ops, "op", id=f"{a.rsc}-{name}-interval-{interval}", name=name,
                             interval=interval, timeout=timeout)
        self.ids.update(str(el.get("id")) for el in prim.iter() if el.get("id"))
        if self._resources is not None:
            self._resources[a.rsc] = prim
        return None, _serialize(prim)

    def _drop_meta(self, rsc: str, names: tuple[str, ...]) -> tuple[str | None, str | None]:
        res = self._resource(rsc)
        before = []
        for block in res.iterfind("meta_attributes"):
            for nv in list(block.iterfind("nvpair")):
                if nv.get("name") in names:
                    before.append(_serialize(nv) or "")
                    block.remove(nv)
        return ("".join(before) or None), None

    def _remove_vm(self, rsc: str, keep_running: bool) -> tuple[str | None, str | None]:
        res = self._resource(rsc)
        before = [_serialize(res) or ""]
        res.getparent().remove(res)  # type: ignore[union-attr]
        assert self._resources is not None
        del self._resources[rsc]
        for cid, el in list(self.by_id.items()):
            refs = {el.get(k) for k in ("rsc", "with-rsc", "first", "then")} | {
                r.get("id") for r in el.iter("resource_ref")}
            if owned(cid) and rsc in refs:
                before.append(_serialize(el) or "")
                self.constraints.remove(el)
                del self.by_id[cid]
        after = None
        if keep_running:
            crm_config = self._section("crm_config")
            if next((b for b in crm_config if b.get("id") == ORPHANS_SET), None) is None:
                # score INFINITY: this set wins over cib-bootstrap-options for as long as it is
                held = etree.SubElement(crm_config, "cluster_property_set", id=ORPHANS_SET,
                                        score="INFINITY")
                _nv(held, ORPHANS_SET, "stop-orphan-resources", "false")
                after = _serialize(held)
        return "".join(before), after

    def apply(self, action: AnyAction) -> tuple[str | None, str | None]:
        """Apply one action to the tree; return the affected XML before and after."""
        match action:
            case SetLocation(id=i, rsc=r, node=n, score=s):
                return self._replace_constraint(
                    etree.Element("rsc_location", id=i, rsc=r, node=n, score=s))
            case SetAllowedNodes(id=i, rsc=r, nodes=ns):
                return self._replace_constraint(_allowed_nodes(i, r, ns))
            case AddOrder(id=i, first=f, then=t, order_kind=k):
                return self._replace_constraint(etree.Element(
                    "rsc_order", {"id": i, "first": f, "first-action": "start", "then": t,
                                  "then-action": "start", "kind": k}))
            case AddColocation(id=i, rsc=r, with_rsc=w, score=s):
                return self._replace_constraint(etree.Element(
                    "rsc_colocation", {"id": i, "rsc": r, "with-rsc": w, "score": s}))
            case RemoveConstraint(id=i):
                return self._remove_constraint(i)
            case SetMeta(rsc=r, name=n, value=v):
                block = self._attributes(self._resource(r), "meta_attributes",
                                         f"{r}-meta_attributes")
                return self._set_nvpair(block, str(block.get("id")), n, v)
            case SetProperty(name=n, value=None):
                return self._unset_property(n)
            case SetProperty(name=n, value=str() as v):
                return self._set_property(n, v)
            case SetNodeAttribute(node=n, name=a, value=v):
                host = self._node(n)
                block = self._attributes(host, "instance_attributes",
                                         f"nodes-{host.get('id') or n}")
                return self._set_nvpair(block, str(block.get("id")), a, v)
            case SetUtilization(target="node", name=n, values=vs):
                host = self._node(n)
                return self._utilization(host, f"nodes-{host.get('id') or n}-utilization", vs)
            case SetUtilization(name=r, values=vs):
                return self._utilization(self._resource(r), f"{r}-utilization", vs)
            case Cleanup(rsc=r, node=n, reset_only=only):
                return clear_failures_in_status(self.root, r, n, keep_history=only)
            case CreateVm():
                return self._create_vm(action)
            case ManageVm(rsc=r):
                return self._drop_meta(r, ("is-managed", HOLD_MARK))
            case HoldVm(rsc=r):
                return self._hold_vm(r)
            case RemoveVm(rsc=r, keep_running=keep):
                return self._remove_vm(r, keep)
            case ReleaseOrphans():
                return self._release_orphans()
            case ForgetResource(rsc=r):
                return forget_in_status(self.root, r)
        raise EditError(f"no CIB edit for {type(action).__name__}")

    def _remove_constraint(self, cid: str) -> tuple[str | None, str | None]:
        old = self.by_id.pop(cid, None)
        if old is None:
            return None, None  # already gone: removing is idempotent
        before = _serialize(old)
        self.constraints.remove(old)
        return before, None

    def _set_property(self, name: str, value: str) -> tuple[str | None, str | None]:
        crm_config = self._section("crm_config")
        props = next((b for b in crm_config if b.get("id") == "cib-bootstrap-options"), None)
        if props is None:
            props = etree.SubElement(crm_config, "cluster_property_set",
                                     id=self._unique_id("cib-bootstrap-options"))
        return self._set_nvpair(props, "cib-bootstrap-options", name, value)

    def _node(self, name: str) -> etree._Element:
        host = next((el for el in self._section("nodes") if el.get("uname") == name), None)
        if host is None:
            raise EditError(f"node {name} is not in the CIB's nodes section")
        return host

    def _hold_vm(self, rsc: str) -> tuple[str | None, str | None]:
        block = self._attributes(self._resource(rsc), "meta_attributes",
                                 f"{rsc}-meta_attributes")
        before, _ = self._set_nvpair(block, str(block.get("id")), "is-managed", "false")
        self._set_nvpair(block, str(block.get("id")), HOLD_MARK, "retire")
        return before, _serialize(block)

    def _release_orphans(self) -> tuple[str | None, str | None]:
        crm_config = self._section("crm_config")
        held = next((b for b in crm_config if b.get("id") == ORPHANS_SET), None)
        if held is None:
            return None, None
        crm_config.remove(held)
        return _serialize(held), None


def _allowed_nodes(cid: str, rsc: str, nodes: tuple[str, ...]) -> etree._Element:
    """Allowed nodes as Pacemaker writes a ban on every other node: one -INFINITY rule."""
    loc = etree.Element("rsc_location", id=cid, rsc=rsc)
    rule = etree.SubElement(loc, "rule", {"id": f"{cid}-rule", "score": "-INFINITY",
                                          "boolean-op": "and"})
    for k, node in enumerate(nodes):
        etree.SubElement(rule, "expression", id=f"{cid}-rule-expr-{k}",
                         attribute="#uname", operation="ne", value=node)
    return loc


def _nv(parent: etree._Element, owner: str, name: str, value: str) -> None:
    etree.SubElement(parent, "nvpair", id=f"{owner}-{name}", name=name, value=value)


def forget_in_status(root: etree._Element, rsc: str) -> tuple[str | None, str | None]:
    """The CIB part of `crm_resource --refresh` of an orphan, for CIB files only."""
    status = root.find("status")
    gone = [] if status is None else [
        el for el in status.iterfind("node_state/lrm/lrm_resources/lrm_resource")
        if el.get("id") == rsc]
    for el in gone:
        el.getparent().remove(el)  # type: ignore[union-attr]
    return (f"{len(gone)} histories of {rsc}" if gone else None), None


def clear_failures_in_status(root: etree._Element, rsc: str, node: str,
                             keep_history: bool = False) -> tuple[str | None, str | None]:
    """The status part of a cleanup, for CIB files only; with `keep_history` only the
    fail-count and last-failure attributes go (what attrd_updater --delete does live).

    On a live cluster `crm_resource --cleanup` asks the controller to do this; with CIB_file=
    crm_resource only says "Dry run: skipping clean-up ... due to CIB_file" (and crashes in 2.1.5),
    so offline work (plan --apply --cib, the simulated demo) edits the status the same way.
    """
    status = root.find("status")
    removed: list[str] = []
    if status is None:
        return None, None
    for ns in status.iter("node_state"):
        if ns.get("uname") != node:
            continue
        for lrm_res in ns.iter("lrm_resource"):
            if keep_history or lrm_res.get("id", "").split(":", 1)[0] != rsc:
                continue
            for op in list(lrm_res):
                if str(op.get("id", "")).endswith("_last_failure_0"):
                    removed.append(str(op.get("id")))
                    lrm_res.remove(op)
        for nv in list(ns.iter("nvpair")):
            name = nv.get("name", "")
            if name.startswith((f"fail-count-{rsc}#", f"last-failure-{rsc}#")):
                removed.append(name)
                nv.getparent().remove(nv)  # type: ignore[union-attr]
    return (", ".join(removed) or None), None
