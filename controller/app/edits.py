"""The web view's actions: each one a change to the desired file, reviewed before it is made.

The desired file is the truth (DESIGN): a button does not change the cluster, it edits the
file, and the loop applies the file as it applies any edit. `review` shows the exact change (a
unified diff: ruamel.yaml's round trip keeps every other byte of the file -- comments, layout,
quoting), `validate`'s verdict, and the plan with Pacemaker's predicted transition for it, the
same pass `plan` runs (engine/pipeline.py, nothing applied). `confirm` writes the file only if
neither the file (its sha256) nor the CIB's configuration (its version) changed since that
review, atomically, and audits it with the user; with `git` in the file's directory, a commit
with the user as author.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from controller import commands
from controller.app.weight import consequences, heaviest
from controller.engine.audit import AuditLog, AuditRecord, PassAudit, audit_time
from controller.engine.guard import COOLDOWN_SECONDS
from controller.engine.ledger import Ledger
from controller.engine.pipeline import PassEffects, PassInput, reconcile
from controller.engine.preview import LOCAL, InlinePreviewer, Simulator
from controller.model.actions import TransitionStep, describe
from controller.model.desired import DesiredState, parse_desired
from controller.model.errors import DesiredStateError, ToolError, WardenError
from controller.model.names import DOMAIN_NAME, NODE_NAME
from controller.model.observed import ConfigVersion, ObservedState, domain_active
from controller.model.vms import is_vm_agent
from reconcilers.base import under

# Layouts tried, in order: the one that reproduces the file byte for byte is kept. (mapping,
# sequence, offset) as ruamel.yaml names them: "vms:\n  - name: a\n    state: x" is (2, 4, 2).
LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 4, 0))
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# Characters no text kvm-warden writes into the desired file may hold: C0 and C1 controls, and
# what YAML 1.1 breaks lines at besides them (NEL U+0085 is C1; LS U+2028, PS U+2029), the BOM
# and lone surrogates. One of them in a path split the file's line and blocked every later edit.
YAML_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]")
MAX_CHANGED_LINES = 8  # an edit is a few lines; more means the file would be reformatted


class EditError(WardenError):
    """The edit cannot be made (unknown VM, a file the editor cannot keep as it is...)."""


class Place(msgspec.Struct, frozen=True, tag="place"):
    """Migrate/pin: placement.prefer = node; None clears the preference."""

    vm: str
    node: str | None = None


class RunState(msgspec.Struct, frozen=True, tag="run-state"):
    vm: str
    state: Literal["running", "stopped"]


class NodeState(msgspec.Struct, frozen=True, tag="node-state"):
    """Drain (standby) or maintenance of a node, or online to lift it (cluster.nodes)."""

    node: str
    state: Literal["online", "standby", "maintenance"]


class Retire(msgspec.Struct, frozen=True, tag="retire"):
    vm: str
    keep_running: bool = False


class CleanFailures(msgspec.Struct, frozen=True, tag="clean-failures"):
    """Pacemaker's cleanup of the VM's failures (vms[].clean_failures_before). `before` is
    the instant, filled in by the review (now) so that confirm writes what was reviewed."""

    vm: str
    before: str | None = None


Transport = Literal["ssh", "tcp", "tls"]


class Enroll(msgspec.Struct, frozen=True, tag="enroll"):
    """Declare a domain that runs outside the cluster (reconcilers/enroll.py takes it from
    there). What is not given, the review suggests from the cluster (`suggest_enrollment`)."""

    vm: str
    config: str | None = None
    migration_transport: Transport | None = None
    storage: str | None = None
    prefer: str | None = None


class Upgrade(msgspec.Struct, frozen=True, tag="upgrade"):
    """A rolling upgrade declared (`upgrade:`, its target release and node order) or, with
    `to` None, ended (the section removed)."""

    to: str | None = None
    order: tuple[str, ...] = ()


Edit = Place | RunState | NodeState | Retire | CleanFailures | Enroll | Upgrade


def completed(e: Edit, now: float, observed: ObservedState | None = None,
              desired: DesiredState | None = None) -> Edit:
    """The edit with what the review decides filled in (a cleanup's instant, an enrollment's
    config, transport, storage and node)."""
    if isinstance(e, CleanFailures) and e.before is None:
        return CleanFailures(vm=e.vm, before=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime(now)))
    if isinstance(e, Enroll):
        if observed is None or desired is None:
            raise EditError("an enrollment is checked against a valid desired file and the "
                            "observed cluster")
        # Every field given or not, the domain must run on one node, as the review says.
        return suggest_enrollment(e, observed, desired)
    return e


def _transport(value: str | None) -> Transport | None:
    match value:
        case "ssh" | "tcp" | "tls":
            return value
    return None


def suggest_enrollment(e: Enroll, observed: ObservedState, desired: DesiredState) -> Enroll:
    """What an operator would write: the node it runs on, its XML beside the other VMs' (the
    agents' config directories, the existing VirtualDomain `config`s) on declared storage, the
    transport the cluster's VMs use (else ssh). Each choice is in the review's diff."""
    if e.vm in desired.vm_by_name():
        raise EditError(f"{e.vm} is in the desired file already")
    on = sorted(n for n, doms in observed.domains.items() if n not in observed.stale
                and (d := doms.get(e.vm)) is not None and domain_active(d))
    if len(on) != 1:
        raise EditError(f"{e.vm} runs on {', '.join(on) or 'no node'} (libvirt): enrolling "
                        "takes a domain that runs on one node")
    vds = [r for r in (observed.cib.resources.values() if observed.cib else ())
           if is_vm_agent(r.agent)]
    dirs = [d for ds in observed.config_dirs.values() for d in ds] + [
        str(PurePosixPath(p).parent) for files in observed.config_files.values()
        for p in files] + [str(PurePosixPath(r.params["config"]).parent) for r in vds
                               if r.params.get("config", "").startswith("/")]
    stores = {st.name: st.mountpoint for st in desired.storage}
    shared = [d for d in dirs if any(under(d + "/x", m) for m in stores.values())]
    config = e.config
    if config is None:
        if not shared:
            raise EditError("no directory of domain XML on declared storage is known (the "
                            "agents' --config-dir, the config of the cluster's VirtualDomain "
                            f"resources): declare {e.vm} in the file by hand")
        config = f"{Counter(shared).most_common(1)[0][0]}/{e.vm}.xml"
    storage = e.storage or max((n for n, m in stores.items() if under(config, m)),
                               key=lambda n: len(stores[n]), default=None)
    if storage is None:
        raise EditError(f"{config} is under no declared storage")
    used = Counter(t for r in vds if (t := _transport(r.params.get("migration_transport"))))
    transport = e.migration_transport or (used.most_common(1)[0][0] if used else "ssh")
    return Enroll(vm=e.vm, config=config, migration_transport=transport, storage=storage,
                  prefer=e.prefer or on[0])


def describe_edit(e: Edit) -> str:
    match e:
        case Place(vm=v, node=None):
            return f"clear {v}'s preferred node"
        case Place(vm=v, node=n):
            return f"prefer {v} on {n}"
        case RunState(vm=v, state=s):
            return f"{v} {s}"
        case NodeState(node=n, state=s):
            return f"node {n} {s}"
        case Retire(vm=v, keep_running=k):
            return f"retire {v}" + (" (keep it running)" if k else "")
        case CleanFailures(vm=v, before=b):
            return f"clean up {v}'s failures" + (f" up to {b}" if b else "")
        case Enroll(vm=v, prefer=n):
            return f"enroll {v}" + (f" where it runs ({n})" if n else "")
        case Upgrade(to=None):
            return "end the rolling upgrade"
        case Upgrade(to=t, order=o):
            return f"rolling upgrade to {t}, node by node: {', '.join(o)}"
    return repr(e)


def _yaml(layout: tuple[int, int, int]) -> YAML:
    y = YAML()  # round trip
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=layout[0], sequence=layout[1], offset=layout[2])
    return y


def _dump(y: YAML, data: Any) -> str:
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def _load(text: str) -> tuple[YAML, Any]:
    for layout in LAYOUTS:
        y = _yaml(layout)
        try:
            data = y.load(text)
        except YAMLError as exc:
            raise EditError(f"the desired file is not YAML the editor reads: {exc}") from None
        if _dump(y, data) == text:
            return y, data
    raise EditError("the editor cannot keep this file's layout byte for byte: edit it by hand")


def _vm(data: Any, name: str) -> CommentedMap:
    for item in data.get("vms") or ():
        if isinstance(item, CommentedMap) and item.get("name") == name:
            return item
    raise EditError(f"no VM {name!r} in the desired file")


def _apply(data: Any, e: Edit) -> None:
    match e:
        case Place(vm=v, node=n):
            item = _vm(data, v)
            placement = item.get("placement")
            if n is None:
                if isinstance(placement, CommentedMap) and "prefer" in placement:
                    del placement["prefer"]
                    if not placement:
                        del item["placement"]
                return
            if not isinstance(placement, CommentedMap):
                placement = CommentedMap()
                placement.fa.set_flow_style()
                item["placement"] = placement
            placement["prefer"] = n
        case RunState(vm=v, state=s):
            item = _vm(data, v)
            if s == "running" and "state" not in item:
                return  # running is the default
            item["state"] = s
            if "keep_running" in item:
                del item["keep_running"]
        case Retire(vm=v, keep_running=k):
            item = _vm(data, v)
            item["state"] = "absent"
            if k:
                item["keep_running"] = True
            elif "keep_running" in item:
                del item["keep_running"]
        case CleanFailures(vm=v, before=b):
            if b is None or not ISO_UTC.fullmatch(b):
                raise EditError(f"{b!r} is not a time as the review writes it "
                                "(YYYY-MM-DDTHH:MM:SSZ)")
            _vm(data, v)["clean_failures_before"] = b
        case Enroll():
            _append_vm(data, e)
        case Upgrade(to=t, order=o):
            _upgrade(data, t, o)
        case NodeState(node=n, state=s):
            cluster = data.get("cluster")
            nodes = cluster.get("nodes") if isinstance(cluster, CommentedMap) else None
            if not isinstance(nodes, CommentedSeq):
                raise EditError("the desired file lists no cluster.nodes: add the node names "
                                "to declare a node's state")
            for i, entry in enumerate(nodes):
                name = entry.get("name") if isinstance(entry, CommentedMap) else entry
                if name != n:
                    continue
                # "online" is written out: a plain name declares no state (a node an operator
                # put in standby by hand stays there), so it would not bring a node back.
                if isinstance(entry, CommentedMap):
                    entry["state"] = s
                else:
                    spec = CommentedMap([("name", n), ("state", s)])
                    spec.fa.set_flow_style()
                    nodes[i] = spec
                return
            raise EditError(f"node {n!r} is not in cluster.nodes")


def _upgrade(data: Any, to: str | None, order: tuple[str, ...]) -> None:
    if to is None:
        if "upgrade" in data:
            del data["upgrade"]
        return
    bad = [n for n in order if not NODE_NAME.fullmatch(n)]
    if not order or bad:
        raise EditError(f"the upgrade's order must name nodes{': ' + ', '.join(bad) if bad else ''}")
    seq = CommentedSeq(order)
    seq.fa.set_flow_style()
    data["upgrade"] = CommentedMap([("to", to), ("order", seq)])


def _append_vm(data: Any, e: Enroll) -> None:
    if None in (e.config, e.migration_transport, e.storage, e.prefer):
        raise EditError(f"the enrollment of {e.vm} is not complete (a review completes it)")
    if not isinstance(e.config, str) or not re.fullmatch(r"/.{1,1023}", e.config) \
            or YAML_UNSAFE.search(e.config):
        raise EditError(f"{e.config!r} is not an absolute path of printable characters")
    if not isinstance(e.prefer, str) or not NODE_NAME.fullmatch(e.prefer):
        raise EditError(f"{e.prefer!r} is not a node name")
    if not isinstance(e.storage, str) or not NODE_NAME.fullmatch(e.storage):
        raise EditError(f"{e.storage!r} is not a storage name")
    vms = data.get("vms")
    if vms is None:
        vms = data["vms"] = CommentedSeq()
    if not isinstance(vms, CommentedSeq):
        raise EditError("vms: in the desired file is not a list")
    if any(isinstance(i, CommentedMap) and i.get("name") == e.vm for i in vms):
        raise EditError(f"{e.vm} is in the desired file already")
    storage = CommentedSeq([e.storage])
    storage.fa.set_flow_style()
    placement = CommentedMap([("prefer", e.prefer)])
    placement.fa.set_flow_style()
    vms.append(CommentedMap([("name", e.vm), ("config", e.config),
                             ("migration_transport", e.migration_transport),
                             ("storage", storage), ("placement", placement)]))


def edit_text(text: str, e: Edit) -> str:
    """The desired file's text with the edit made, every other byte as it was."""
    for name in (getattr(e, "vm", None), getattr(e, "node", None)):
        if name is not None and not (DOMAIN_NAME.fullmatch(name) or NODE_NAME.fullmatch(name)):
            raise EditError(f"{name!r} is not a VM or node name")
    y, data = _load(text)
    _apply(data, e)
    new = _dump(y, data)
    changed = sum(1 for line in difflib.unified_diff(text.splitlines(), new.splitlines(),
                                                     lineterm="", n=0)
                  if line[:1] in "+-" and not line.startswith(("+++", "---")))
    if changed > MAX_CHANGED_LINES:
        raise EditError(f"the edit would change {changed} lines of the file: edit it by hand")
    return new


def unified_diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True), path, path))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Sources:
    """What a review reads, from the running controller (app/web.py builds it)."""

    path: str
    observed: Callable[[], ObservedState]
    current_cib: Callable[[], bytes]
    ledger: Callable[[], Ledger]  # the service's, as last saved: its cooldowns and rates
    audit: AuditLog
    after_write: Callable[[], None]  # the desired store re-reads the file
    simulator: Callable[[], Simulator] = lambda: LOCAL  # the DC's scheduler (the service's)


def review(src: Sources, e: Edit) -> dict[str, Any]:
    """The change, its verdict and its plan; nothing is written."""
    text = Path(src.path).read_text(encoding="utf-8")
    observed = src.observed()
    e = completed(e, time.time(), observed, _current(text, src.path))
    new = edit_text(text, e)
    cib = observed.cib
    doc: dict[str, Any] = {
        "edit": msgspec.to_builtins(e), "description": describe_edit(e),
        "diff": unified_diff(src.path, text, new), "changed": new != text,
        "file_sha256": sha256(text),
        "cib_version": list(cib.version) if cib is not None else None,
    }
    try:
        desired = parse_desired(new, source=src.path)
    except DesiredStateError as exc:
        return {**doc, "valid": False, "problems": list(exc.problems), "actions": [],
                "transition": [], "findings": [], "weight": "info", "consequences": []}
    vm = desired.vm_by_name().get(getattr(e, "vm", ""))
    # what the review's findings are filtered by: the edited VM's resource, or the node
    doc["subject"] = {"resource": vm.resource_id if vm else None,
                      "node": getattr(e, "node", None) if isinstance(e, NodeState) else None}
    planned, steps = _plan(src, observed, desired)
    cost = consequences(e, _current(text, src.path), observed, steps)
    return {**doc, "valid": True, "problems": [], **planned,
            "weight": heaviest(cost), "consequences": msgspec.to_builtins(cost)}


def _current(text: str, path: str) -> DesiredState | None:
    try:
        return parse_desired(text, source=path)
    except DesiredStateError:
        return None


def _plan(src: Sources, observed: ObservedState, desired: DesiredState
          ) -> tuple[dict[str, Any], tuple[TransitionStep, ...]]:
    now = time.time()
    raw = src.current_cib()
    ledger, cooling = _without_cooldowns(src.ledger(), now)
    out = reconcile(PassInput(observed, desired, now, now, raw),
                   PassEffects(ledger, InlinePreviewer(lambda: raw, simulator=src.simulator),
                               PassAudit(AuditLog(None), "review", dedupe=False), None))
    steps = out.preview.steps if out.preview is not None else ()
    return {
        "actions": [{"action": describe(d.action), "reconciler": d.action.reconciler,
                     "verdict": d.verdict.reason,
                     "detail": d.verdict.detail or (
                         f"once its cooldown is over ({cooling[d.action.key]:.0f} s)"
                         if d.verdict.admitted and d.action.key in cooling else ""),
                     "why": d.action.why} for d in out.decisions],
        "transition": msgspec.to_builtins(steps),
        "transition_error": out.preview.error if out.preview is not None else None,
        "scheduler": out.preview.scheduler if out.preview is not None else "",
        "findings": [{"kind": f.kind, "reason": f.reason, "severity": f.severity,
                      "message": f.message,
                      "resource": f.rsc, "node": f.node} for f in out.findings],
    }, steps


def _without_cooldowns(ledger: Ledger, now: float) -> tuple[Ledger, dict[str, float]]:
    """A copy of the service's ledger with its cooldowns over, and the seconds each had left:
    a review shows what the edit will do (and Pacemaker's transition for it) even right after
    kvm-warden changed that object; the loop still waits the cooldown out. Rollback holds and
    failure marks are not cooldowns: they stay (fields of their own in the ledger)."""
    copy = ledger.tentative()
    cooling = {k: COOLDOWN_SECONDS - (now - t) for k, t in ledger.last_change.items()
               if now - t < COOLDOWN_SECONDS}
    for k in cooling:
        del copy.last_change[k]
    return copy, cooling


class Stale(EditError):
    """The file or the CIB changed since the review: review again."""


def confirm(src: Sources, e: Edit, file_sha256: str, cib_version: ConfigVersion | None,
            user: str) -> dict[str, Any]:
    """Write the reviewed edit, if nothing changed since the review; audit it."""
    path = Path(src.path)
    text = path.read_text(encoding="utf-8")
    if sha256(text) != file_sha256:
        raise Stale("the desired file changed since the review: review the action again")
    observed = src.observed()
    cib = observed.cib
    now_version = cib.version if cib is not None else None
    if now_version != (tuple(cib_version) if cib_version is not None else None):
        raise Stale("the cluster's configuration changed since the review (CIB version "
                    f"{cib_version} -> {now_version}): review the action again")
    # Checked again as the cluster is now (an enrollment's domain still runs on one node).
    e = completed(e, time.time(), observed, _current(text, src.path))
    new = edit_text(text, e)
    try:
        parse_desired(new, source=src.path)
    except DesiredStateError as exc:
        raise EditError("the edited file would not be valid: " + "; ".join(exc.problems)) \
            from None
    _write_atomically(path, new)
    audit_id = secrets.token_hex(6)  # what the dialog says, and `kvm-warden audit` shows
    src.audit.write([AuditRecord(
        at=audit_time(), who=f"user:{user}",
        outcome="applied", kind="desired-edit", reconciler="web", action=describe_edit(e),
        why="confirmed after review in the web view", before=file_sha256, after=sha256(new),
        id=audit_id)])
    committed = _git_commit(path, user, describe_edit(e))
    src.after_write()
    return {"written": True, "file_sha256": sha256(new), "git": committed,
            "audit_id": audit_id, "path": src.path, "description": describe_edit(e)}


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file beside it, then rename: a reader sees the old file or the new one.
    A symbolic link is followed (its target is rewritten, the link stays) and the file keeps
    its owner, group and mode."""
    target = Path(os.path.realpath(path))
    st = target.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                raise EditError(f"{target} belongs to uid {st.st_uid}, gid {st.st_gid}: this "
                                "service cannot write it as theirs; edit it by hand") from None
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _git_commit(path: Path, user: str, what: str) -> str | None:
    """Commit the file when it lives in a git work tree (the commit id), else None."""
    def git(*argv: str) -> str:
        out = commands.run(["git", "-C", str(path.parent), *argv], timeout=30,
                           ok_codes=(0, 1, 128))
        return out.stdout.decode().strip() if out.returncode == 0 else ""

    try:
        if git("rev-parse", "--is-inside-work-tree") != "true":
            return None
        if not git("-c", f"user.name={user}", "-c", f"user.email={user}@kvm-warden", "commit",
                   "--author", f"{user} <{user}@kvm-warden>", "-m", f"kvm-warden web: {what}",
                   "--", path.name):
            return None
        return git("rev-parse", "HEAD") or None
    except ToolError:  # no git here
        return None
