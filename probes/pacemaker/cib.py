"""Parse the CIB (`cibadmin --query`, or a CIB file) into configuration values.

The configuration section holds what crm_mon does not print: cluster properties as set,
resource params/meta/utilization (VirtualDomain's `config`), and every constraint by id,
which is how kvm-warden tells its own constraints (`warden-...`) from everybody else's.
Schema: /usr/share/pacemaker/pacemaker-3.*.rng (constraints-3.*.rng, resources-3.*.rng).
"""

from __future__ import annotations

import re

from lxml import etree

from controller.model.errors import ParseError
from controller.model.observed import (
    CibConfig,
    ColocationConstraint,
    Constraints,
    Expression,
    LocationConstraint,
    OpRecord,
    OrderConstraint,
    ResourceConfig,
    ResourceSet,
    Rule,
)
from controller.model.pcmk import HOLD_MARK, ORPHANS_SET, opt_bool
from probes.xmlparse import parse_document, required, to_int

_CONTAINERS = frozenset({"clone", "master", "group", "bundle"})


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def parse_cib(data: bytes, *, source: str = "cib") -> CibConfig:
    root = parse_document(data, source=source)
    if root.tag != "cib":
        raise ParseError("not a CIB (expected <cib>)", source=source, element=str(root.tag))
    try:
        return parse_cib_element(root, source=source)
    except ParseError:
        raise
    except RecursionError:
        raise ParseError("nested too deeply", source=source) from None
    except (ValueError, TypeError) as exc:
        raise ParseError(f"malformed CIB: {exc}", source=source) from None


def parse_cib_element(root: etree._Element, *, source: str = "cib") -> CibConfig:
    config = None
    for c in _children(root):
        if c.tag == "configuration":
            config = c
            break
    if config is None:
        raise ParseError("missing <configuration>", source=source, element="cib")
    properties: dict[str, str] = {}
    nodes: list[str] = []
    node_utilization: dict[str, dict[str, str]] = {}
    resources: dict[str, ResourceConfig] = {}
    constraints = Constraints()
    held_orphans = False
    for section in _children(config):
        if section.tag == "crm_config":
            for ps in _children(section):
                if ps.tag == "cluster_property_set":
                    properties.update(_nvpairs(ps))
                    held_orphans = held_orphans or ps.get("id") == ORPHANS_SET
        elif section.tag == "nodes":
            for n in _children(section):
                if n.tag != "node":
                    continue
                name = n.get("uname") or required(n, "id", source=source)
                nodes.append(name)
                util = {k: v for b in _children(n) if b.tag == "utilization"
                        for k, v in _nvpairs(b).items()}
                if util:
                    node_utilization[name] = util
        elif section.tag == "resources":
            _walk_resources(section, None, resources, source)
        elif section.tag == "constraints":
            constraints = _parse_constraints(section, source)
    return CibConfig(
        epoch=_counter(root, "epoch", source),
        admin_epoch=_counter(root, "admin_epoch", source),
        num_updates=_counter(root, "num_updates", source),
        properties=properties,
        nodes=tuple(nodes),
        node_utilization=node_utilization,
        resources=resources,
        constraints=constraints,
        migrations=_migrations(root),
        held_orphans=held_orphans,
        probes=_probes(root, {r.id for r in resources.values() if HOLD_MARK in r.meta}),
        histories=_histories(root, set(resources)),
    )


def _histories(root: etree._Element, configured: set[str]) -> tuple[str, ...]:
    """VMs (VirtualDomain) the status section still has a history of although the
    configuration no longer has them. Only VMs: bundles and guest nodes have implicit
    resources that are never configured."""
    status = root.find("status")
    if status is None:
        return ()
    ids = {str(res.get("id", "")) for res in
           status.iterfind("node_state/lrm/lrm_resources/lrm_resource[@type='VirtualDomain']")}
    return tuple(sorted(i for i in ids if i and i not in configured))


def _probes(root: etree._Element, held: set[str]) -> tuple[tuple[str, str, int], ...]:
    """(resource, node, rc) of each finished probe (monitor, interval 0) of the resources
    kvm-warden holds unmanaged: where Pacemaker has looked for them, and what it found."""
    status = root.find("status")
    if status is None or not held:
        return ()
    out = set()
    for ns in status.iterfind("node_state"):
        node = ns.get("uname")
        for res in ns.iterfind("lrm/lrm_resources/lrm_resource"):
            rid = str(res.get("id", ""))
            if rid not in held or not node:
                continue
            for op in res.iterfind("lrm_rsc_op"):
                if op.get("operation") == "monitor" and op.get("interval") == "0" \
                        and op.get("op-status") == "0" and (op.get("rc-code") or "").isdigit():
                    out.add((rid, str(node), int(str(op.get("rc-code")))))
    return tuple(sorted(out))


def _migrations(root: etree._Element) -> tuple[tuple[str, str, str], ...]:
    status = root.find("status")
    if status is None:
        return ()
    out = set()
    for op in status.iterfind("node_state/lrm/lrm_resources/lrm_resource/lrm_rsc_op"
                              "[@operation='migrate_to']"):
        rsc = op.getparent()
        src, dst = op.get("migrate_source"), op.get("migrate_target")
        if rsc is not None and src and dst and op.get("rc-code") == "0":
            out.add((str(rsc.get("id", "")).split(":", 1)[0], src, dst))
    return tuple(sorted(out))


def _counter(root: etree._Element, name: str, source: str) -> int:
    value = root.get(name)
    return 0 if value is None else to_int(value, element="cib", attribute=name, source=source)


def _nvpairs(block: etree._Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for nv in _children(block):
        if nv.tag == "nvpair":
            name = nv.get("name")
            if name is not None:  # an id-ref nvpair has no name of its own
                out[name] = nv.get("value", "")
    return out


def _walk_resources(
    container: etree._Element, parent: str | None, out: dict[str, ResourceConfig], source: str
) -> None:
    for el in _children(container):
        tag = el.tag
        if tag != "primitive" and tag not in _CONTAINERS:
            continue
        rid = required(el, "id", source=source)
        params: dict[str, str] = {}
        meta: dict[str, str] = {}
        utilization: dict[str, str] = {}
        for block in _children(el):
            if block.tag == "instance_attributes":
                params.update(_nvpairs(block))
            elif block.tag == "meta_attributes":
                meta.update(_nvpairs(block))
            elif block.tag == "utilization":
                utilization.update(_nvpairs(block))
        agent = None
        if tag == "primitive":
            cls, prov, typ = el.get("class"), el.get("provider"), el.get("type")
            agent = ":".join(p for p in (cls, prov, typ) if p) or el.get("template")
        out[rid] = ResourceConfig(
            id=rid,
            kind=str(tag),
            parent=parent,
            agent=agent,
            params=params,
            meta=meta,
            utilization=utilization,
        )
        if tag in _CONTAINERS:
            _walk_resources(el, rid, out, source)


def _sets(el: etree._Element, source: str) -> tuple[ResourceSet, ...]:
    return tuple(
        ResourceSet(
            id=s.get("id"),
            resources=tuple(
                required(r, "id", source=source) for r in _children(s) if r.tag == "resource_ref"
            ),
            sequential=opt_bool(s.get("sequential")),
            role=s.get("role"),
        )
        for s in _children(el)
        if s.tag == "resource_set"
    )


def _rule(el: etree._Element) -> Rule:
    exprs: list[Expression] = []
    opaque = False
    for c in _children(el):
        if c.tag == "expression" and c.get("attribute") and c.get("operation"):
            exprs.append(
                Expression(attribute=str(c.get("attribute")), operation=str(c.get("operation")),
                           value=c.get("value"))
            )
        else:
            opaque = True
    return Rule(
        score=el.get("score") or el.get("score-attribute"),
        boolean_op=el.get("boolean-op", "and"),
        expressions=tuple(exprs),
        opaque=opaque,
    )


def _parse_constraints(section: etree._Element, source: str) -> Constraints:
    location: list[LocationConstraint] = []
    order: list[OrderConstraint] = []
    colocation: list[ColocationConstraint] = []
    for el in _children(section):
        tag = el.tag
        if tag == "rsc_location":
            rules = tuple(_rule(c) for c in _children(el) if c.tag == "rule")
            has_rule = bool(rules)
            location.append(
                LocationConstraint(
                    id=required(el, "id", source=source),
                    rsc=el.get("rsc"),
                    rsc_pattern=el.get("rsc-pattern"),
                    node=None if has_rule else el.get("node"),
                    score=el.get("score") or el.get("score-attribute"),
                    role=el.get("role"),
                    rule=has_rule,
                    rules=rules,
                    sets=_sets(el, source),
                )
            )
        elif tag == "rsc_order":
            order.append(
                OrderConstraint(
                    id=required(el, "id", source=source),
                    first=el.get("first"),
                    then=el.get("then"),
                    first_action=el.get("first-action"),
                    then_action=el.get("then-action"),
                    kind=el.get("kind"),
                    symmetrical=opt_bool(el.get("symmetrical")),
                    sets=_sets(el, source),
                )
            )
        elif tag == "rsc_colocation":
            colocation.append(
                ColocationConstraint(
                    id=required(el, "id", source=source),
                    rsc=el.get("rsc"),
                    with_rsc=el.get("with-rsc"),
                    score=el.get("score"),
                    rsc_role=el.get("rsc-role"),
                    with_rsc_role=el.get("with-rsc-role"),
                    sets=_sets(el, source),
                )
            )
    return Constraints(location=tuple(location), order=tuple(order), colocation=tuple(colocation))


def parse_operations(data: bytes, *, source: str = "cib",
                     resources: frozenset[str] | None = None) -> tuple[OpRecord, ...]:
    """The operation history of the CIB's status section (`lrm_rsc_op`; the whole CIB or
    `cibadmin --query --scope status`), one-shot and pending
    operations only (recurring monitors say nothing about who changed a domain). `resources`:
    only these resource ids. Malformed entries are skipped; a document that is not a CIB is a
    ParseError."""
    root = parse_document(data, source=source)
    if root.tag not in ("cib", "status"):
        raise ParseError("not a CIB or its status (expected <cib> or <status>)", source=source,
                         element=str(root.tag))
    out: list[OpRecord] = []
    status = root if root.tag == "status" else root.find("status")
    if status is None:
        return ()
    for ns in status.iterchildren("node_state"):
        node = ns.get("uname") or ns.get("id") or ""
        for res in ns.iterfind("lrm/lrm_resources/lrm_resource"):
            rid = (res.get("id") or "").split(":", 1)[0]
            if not rid or (resources is not None and rid not in resources):
                continue
            for op in res.iterchildren("lrm_rsc_op"):
                try:
                    interval = int(op.get("interval", "0") or 0)
                    if interval:
                        continue
                    out.append(OpRecord(
                        resource=rid, node=node, task=op.get("operation", ""),
                        call_id=int(op.get("call-id", "0") or 0),
                        op_status=int(op.get("op-status", "0") or 0),
                        rc=int(op.get("rc-code", "0") or 0),
                        last_rc_change=int(op.get("last-rc-change", "0") or 0),
                        exec_ms=int(op.get("exec-time", "0") or 0),
                        migrate_source=op.get("migrate_source"),
                        migrate_target=op.get("migrate_target")))
                except ValueError:
                    continue
    return tuple(out)


FAILURE_ATTRIBUTE = re.compile(r"(fail-count|last-failure)-(?P<rsc>[^#]+)#[a-z_]+_[0-9]+")


def failure_attributes(data: bytes, rsc: str, node: str, *, source: str = "cib") -> list[str]:
    """The names of the node's transient attributes that count the resource's failures
    (`fail-count-RSC#OP_INTERVAL`, `last-failure-RSC#OP_INTERVAL`) with a value set, from the
    whole CIB or its status section. Only names of that exact shape: they reach a command line."""
    root = parse_document(data, source=source)
    status = root if root.tag == "status" else root.find("status")
    out: set[str] = set()
    for ns in status.iterchildren("node_state") if status is not None else ():
        if ns.get("uname") != node:
            continue
        for nv in ns.iterfind("transient_attributes//nvpair"):
            name = nv.get("name") or ""
            m = FAILURE_ATTRIBUTE.fullmatch(name)
            if m and m.group("rsc") == rsc and (nv.get("value") or "") not in ("", "0"):
                out.add(name)
    return sorted(out)
