"""`kvm-warden export`: the desired file of the cluster as it is, for adopting kvm-warden.

From the CIB: a storage entry per cloned `ocf:heartbeat:Filesystem` (mountpoint from its
`directory`, `requires` from the Mandatory order chain that already leads to it), a VM per
`VirtualDomain` resource, its placement from the constraints that already exist (a positive
location preference, an allowed-nodes rule, -INFINITY colocations) -- never from where it happens
to run -- and its state from `target-role`; the cluster properties that matter. Every entry says
where it came from. The contract (tests/integration/test_export.py): `plan` with the exported file
on the same cluster proposes no placement, run-state or property change and no removal; only
missing safety (storage dependencies, the storage chain, no-quorum-policy=freeze). With
`--libvirt NODE=URI`, the domains running there without a resource are listed as commented
enrollment candidates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from controller.app.text import one_line
from controller.engine.observe import observe_once
from controller.model.desired import parse_desired
from controller.model.errors import DesiredStateError, ToolError, WardenError
from controller.model.index import ClusterIndex, build_index
from controller.model.names import DOMAIN_NAME, RESOURCE_ID, conventional_name, conventional_resource
from controller.model.observed import LocationConstraint, ResourceConfig, domain_active
from controller.model.vms import is_vm_agent
from probes.libvirt.domains import list_domains
from reconcilers.base import under
from reconcilers.placement import foreign, score_value


def q(text: str) -> str:
    """A YAML scalar that stays a string (JSON strings are valid YAML)."""
    return json.dumps(text)


def _storage(index: ClusterIndex) -> list[tuple[str, str, str, list[str], str]]:
    """(name, clone id, mountpoint, requires nearest first, where) per cloned Filesystem."""
    out = []
    for rid, cfg in sorted(index.configured.items()):
        if not (cfg.agent or "").endswith(":Filesystem") or cfg.parent is None:
            continue
        clone = index.configured.get(cfg.parent)
        if clone is None or clone.kind not in ("clone", "master"):
            continue
        mountpoint = cfg.params.get("directory")
        if not mountpoint:
            continue
        chain, seen, current = [], {clone.id}, clone.id
        while True:  # follow "X then current" Mandatory orders back: gfs2 <- clvmd <- dlm
            first = next((a for a, b in sorted(index.order_pairs) if b == current
                          and index.configured.get(a, cfg).kind in ("clone", "master")), None)
            if first is None or first in seen:
                break
            chain.append(first)
            seen.add(first)
            current = first
        out.append((clone.id.removesuffix("-clone"), clone.id, mountpoint, chain,
                    f"clone {clone.id} of {rid} ({cfg.agent})"))
    return out


def _prefer(index: ClusterIndex, rid: str) -> LocationConstraint | None:
    prefs = [c for cid, c in sorted(index.location.items()) if foreign(cid) and c.rsc == rid
             and c.node and not c.rule and c.role is None and score_value(c.score) > 0]
    return max(prefs, key=lambda c: score_value(c.score)) if prefs else None


def _allowed(index: ClusterIndex, rid: str) -> tuple[LocationConstraint, list[str]] | None:
    for cid, c in sorted(index.location.items()):
        if not foreign(cid) or c.rsc != rid or len(c.rules) != 1 or c.role is not None:
            continue
        rule = c.rules[0]
        exprs = rule.expressions
        if (not rule.opaque and (rule.score or "").upper() == "-INFINITY"
                and rule.boolean_op == "and" and exprs
                and all(e.attribute == "#uname" and e.operation == "ne" for e in exprs)):
            return c, sorted(str(e.value) for e in exprs)
    return None


def _candidates(index: ClusterIndex, libvirt: Mapping[str, str],
                storage: list[tuple[str, str, str, list[str], str]]) -> list[str]:
    """Commented entries for the domains running on the given nodes' libvirt without a
    Pacemaker resource: what enrollment would bring in once uncommented (and checked)."""
    known = {conventional_name(rid) for rid, cfg in index.configured.items()
             if is_vm_agent(cfg.agent)}
    out: list[str] = []
    for node, uri in sorted(libvirt.items()):
        try:
            domains = list_domains(uri)
        except ToolError as exc:
            out.append(f"# (could not list {node}'s domains: {one_line(str(exc))})")
            continue
        for name, dom in sorted(domains.items()):
            if name in known or not domain_active(dom) \
                    or not DOMAIN_NAME.fullmatch(name):
                continue
            st = next((s for s in storage if dom.disks and all(
                under(d, s[2]) for d in dom.disks)), None)
            out += [f"#  - name: {q(name)}   # {dom.state} on {node} ({uri}), no Pacemaker "
                    "resource: uncomment to enroll it",
                    f"#    config: {q((st[2] if st else '/SHARED/STORAGE') + '/' + name + '.xml')}"
                    "   # on the shared storage; written from libvirt if missing",
                    "#    migration_transport: ssh",
                    f"#    storage: [{q(st[0]) if st else 'NAME'}]"
                    + ("" if st else "   # its disks are on no storage found: "
                       + ", ".join(dom.disks))]
    return out


def export_desired(cib_file: str | None, libvirt: Mapping[str, str] | None = None) -> str:
    observed, _ = observe_once(cib_file)
    index = build_index(observed)
    source = cib_file or "the live cluster (cibadmin --query)"
    lines = ["# kvm-warden desired state, exported by `kvm-warden export` from " + source + ".",
             "# Every entry names where it came from. Check it with `kvm-warden validate` and",
             "# preview it with `kvm-warden plan --desired FILE`: on this cluster it changes",
             "# nothing but missing safety (storage dependencies, no-quorum-policy=freeze).",
             "version: 1", "cluster:", *_cluster_lines(index)]
    storage = _storage(index)
    lines += _storage_lines(storage)
    vms = [(rid, cfg) for rid, cfg in sorted(index.configured.items())
           if cfg.parent is None and is_vm_agent(cfg.agent)]
    names = {rid: conventional_name(rid) for rid, _cfg in vms
             if DOMAIN_NAME.fullmatch(conventional_name(rid)) and RESOURCE_ID.fullmatch(rid)}
    scores: list[int] = []
    if vms:
        lines.append("vms:")
    for rid, cfg in vms:
        if rid in names:
            lines += _vm_lines(index, rid, cfg, names, scores)
    candidates = _candidates(index, libvirt or {}, storage)
    if candidates:
        lines += [*([] if vms else ["vms: []"]),
                  "# Domains running outside the cluster (kvm-warden enrolls one without a "
                  "restart):", *candidates]
    lines += _policy_lines(scores)
    lines += [f"# not exported: {rid} (its name is not one kvm-warden can use safely)"
              for rid, _cfg in vms if rid not in names]
    text = "\n".join(lines) + "\n"
    try:
        parse_desired(text, source="export")
    except DesiredStateError as exc:  # a bug in export, not the user's: say so plainly
        raise WardenError("the exported file does not validate: "
                          + "; ".join(exc.problems)) from None
    return text


def _cluster_lines(index: ClusterIndex) -> list[str]:
    props = {}
    for name in ("stonith-enabled", "no-quorum-policy"):
        value = index.properties.get(name)
        # no-quorum-policy is pinned only when it is already the safe freeze: otherwise the
        # storage reconciler proposes freeze, with its reason, for the operator to see.
        if value is not None and (name != "no-quorum-policy" or value == "freeze"):
            props[name] = value
    lines = []
    if props:
        lines.append("  properties:   # crm_config cib-bootstrap-options")
        lines += [f"    {name}: {q(value)}" for name, value in props.items()]
    nodes = sorted(index.node_names)
    if nodes:
        lines.append(f"  nodes: [{', '.join(q(n) for n in nodes)}]   # the CIB's nodes")
    return lines


def _storage_lines(storage: list[tuple[str, str, str, list[str], str]]) -> list[str]:
    lines = ["storage:"] if storage else []
    for name, clone, mountpoint, chain, where in storage:
        lines += [f"  - name: {q(name)}   # {where}", f"    resource: {q(clone)}",
                  f"    mountpoint: {q(mountpoint)}"]
        if chain:
            lines.append(f"    requires: [{', '.join(q(c) for c in chain)}]   # existing "
                         "Mandatory orders")
    return lines


def _vm_lines(index: ClusterIndex, rid: str, cfg: ResourceConfig, names: dict[str, str],
              scores: list[int]) -> list[str]:
    """One VM's entry; the score of a preference it adopts is added to `scores`."""
    name = names[rid]
    lines = [f"  - name: {q(name)}   # primitive {rid} ({cfg.agent})"]
    if rid != conventional_resource(name):
        lines.append(f"    resource: {q(rid)}")
    role = (cfg.meta.get("target-role") or "Started").lower()
    lines.append(f"    state: {'stopped' if role == 'stopped' else 'running'}   # "
                 f"target-role {cfg.meta.get('target-role') or '(unset: Started)'}")
    placement = []
    allowed = _allowed(index, rid)
    if allowed:
        placement.append(f"      allowed: [{', '.join(q(n) for n in allowed[1])}]   # "
                         f"rsc_location {allowed[0].id}")
    prefer = _prefer(index, rid)
    if prefer and (not allowed or prefer.node in allowed[1]):
        scores.append(score_value(prefer.score))
        placement.append(f"      prefer: {q(str(prefer.node))}   # rsc_location {prefer.id} "
                         f"score {prefer.score}")
    if placement:
        lines += ["    placement:", *placement]
    anti = sorted({other for cid, c in index.colocation.items() if foreign(cid)
                   and (c.score or "").strip().upper() == "-INFINITY"
                   for me, other in ((c.rsc, c.with_rsc), (c.with_rsc, c.rsc))
                   if me == rid and other in names})
    if anti:
        lines.append(f"    anti_affinity: [{', '.join(q(names[o]) for o in anti)}]   # "
                     "colocations -INFINITY")
    return lines


def _policy_lines(scores: list[int]) -> list[str]:
    # Adopting a cluster changes nothing but missing safety: move leftovers and failures are
    # reported, and acting on them is the operator's opt-in.
    lines = ["policy:",
             "  clear_move_leftovers: false   # true: remove `pcs resource move` leftovers "
             "(cli-prefer-*) once settled",
             "  clean_failures: false         # true: clean up failures whose cause has cleared"]
    if scores:
        # The existing preferences are adopted as they are: kvm-warden's own preference score
        # is their weakest one, so each of them already satisfies the file.
        lines += [f"  prefer_score: {min(min(scores), 1_000_000)}   # the weakest "
                  "existing preference"]
    return lines


def export_command(cib_file: str | None, output: str | None,
                   libvirt: Mapping[str, str] | None = None) -> int:
    text = export_desired(cib_file, libvirt)
    if output:
        Path(output).write_text(text)
        print(f"wrote {output}")
    else:
        print(text, end="")
    return 0
