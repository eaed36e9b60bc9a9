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
    RemoveConstraint,
    SetAllowedNodes,
    SetLocation,
    SetMeta,
    SetNodeAttribute,
    SetProperty,
)

RESOURCE_TAGS = ("primitive", "clone", "master", "group", "bundle")


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

    def apply(self, action: AnyAction) -> tuple[str | None, str | None]:
        """Apply one action to the tree; return the affected XML before and after."""
        match action:
            case SetLocation(id=i, rsc=r, node=n, score=s):
                return self._replace_constraint(
                    etree.Element("rsc_location", id=i, rsc=r, node=n, score=s))
            case SetAllowedNodes(id=i, rsc=r, nodes=ns):
                loc = etree.Element("rsc_location", id=i, rsc=r)
                rule = etree.SubElement(loc, "rule", {"id": f"{i}-rule", "score": "-INFINITY",
                                                      "boolean-op": "and"})
                for k, node in enumerate(ns):
                    etree.SubElement(rule, "expression", id=f"{i}-rule-expr-{k}",
                                     attribute="#uname", operation="ne", value=node)
                return self._replace_constraint(loc)
            case AddOrder(id=i, first=f, then=t, order_kind=k):
                return self._replace_constraint(etree.Element(
                    "rsc_order", {"id": i, "first": f, "first-action": "start", "then": t,
                                  "then-action": "start", "kind": k}))
            case AddColocation(id=i, rsc=r, with_rsc=w, score=s):
                return self._replace_constraint(etree.Element(
                    "rsc_colocation", {"id": i, "rsc": r, "with-rsc": w, "score": s}))
            case RemoveConstraint(id=i):
                old = self.by_id.pop(i, None)
                if old is None:
                    return None, None  # already gone: removing is idempotent
                before = _serialize(old)
                self.constraints.remove(old)
                return before, None
            case SetMeta(rsc=r, name=n, value=v):
                block = self._attributes(self._resource(r), "meta_attributes",
                                         f"{r}-meta_attributes")
                return self._set_nvpair(block, str(block.get("id")), n, v)
            case SetProperty(name=n, value=v):
                crm_config = self._section("crm_config")
                props = next((b for b in crm_config if b.get("id") == "cib-bootstrap-options"),
                             None)
                if props is None:
                    props = etree.SubElement(crm_config, "cluster_property_set",
                                             id=self._unique_id("cib-bootstrap-options"))
                return self._set_nvpair(props, "cib-bootstrap-options", n, v)
            case SetNodeAttribute(node=n, name=a, value=v):
                host = next((el for el in self._section("nodes") if el.get("uname") == n), None)
                if host is None:
                    raise EditError(f"node {n} is not in the CIB's nodes section")
                block = self._attributes(host, "instance_attributes",
                                         f"nodes-{host.get('id') or n}")
                return self._set_nvpair(block, str(block.get("id")), a, v)
            case Cleanup(rsc=r, node=n, reset_only=only):
                return clear_failures_in_status(self.root, r, n, keep_history=only)
        raise EditError(f"no CIB edit for {type(action).__name__}")


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
