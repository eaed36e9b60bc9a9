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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from controller import commands
from controller.engine.audit import AuditLog, AuditRecord, PassAudit
from controller.engine.ledger import Ledger
from controller.engine.pipeline import PassEffects, PassInput, run_pass
from controller.engine.preview import InlinePreviewer
from controller.model.actions import describe
from controller.model.desired import DesiredState, parse_desired
from controller.model.errors import DesiredStateError, ToolError, WardenError
from controller.model.index import build_index
from controller.model.names import DOMAIN_NAME, NODE_NAME
from controller.model.observed import ConfigVersion, ObservedState

# Layouts tried, in order: the one that reproduces the file byte for byte is kept. (mapping,
# sequence, offset) as ruamel.yaml names them: "vms:\n  - name: a\n    state: x" is (2, 4, 2).
LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 4, 0))
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


Edit = Place | RunState | NodeState | Retire


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
                if s == "online":
                    nodes[i] = n  # a plain name: online, the default
                elif isinstance(entry, CommentedMap):
                    entry["state"] = s
                else:
                    spec = CommentedMap([("name", n), ("state", s)])
                    spec.fa.set_flow_style()
                    nodes[i] = spec
                return
            raise EditError(f"node {n!r} is not in cluster.nodes")


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


def review(src: Sources, e: Edit) -> dict[str, Any]:
    """The change, its verdict and its plan; nothing is written."""
    text = Path(src.path).read_text(encoding="utf-8")
    new = edit_text(text, e)
    observed = src.observed()
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
                "transition": [], "findings": []}
    return {**doc, "valid": True, "problems": [], **_plan(src, observed, desired)}


def _plan(src: Sources, observed: ObservedState, desired: DesiredState) -> dict[str, Any]:
    now = time.time()
    raw = src.current_cib()
    out = run_pass(PassInput(build_index(observed), desired, now, now, raw),
                   PassEffects(src.ledger(), InlinePreviewer(lambda: raw),
                               PassAudit(AuditLog(None), "review", dedupe=False), None))
    steps = out.preview.steps if out.preview is not None else ()
    return {
        "actions": [{"action": describe(d.action), "reconciler": d.action.reconciler,
                     "verdict": d.verdict.reason, "detail": d.verdict.detail,
                     "why": d.action.why} for d in out.decisions],
        "transition": msgspec.to_builtins(steps),
        "transition_error": out.preview.error if out.preview is not None else None,
        "findings": [{"kind": f.kind, "severity": f.severity, "message": f.message}
                     for f in out.findings],
    }


class Stale(EditError):
    """The file or the CIB changed since the review: review again."""


def confirm(src: Sources, e: Edit, file_sha256: str, cib_version: ConfigVersion | None,
            user: str) -> dict[str, Any]:
    """Write the reviewed edit, if nothing changed since the review; audit it."""
    path = Path(src.path)
    text = path.read_text(encoding="utf-8")
    if sha256(text) != file_sha256:
        raise Stale("the desired file changed since the review: review the action again")
    cib = src.observed().cib
    now_version = cib.version if cib is not None else None
    if cib_version is not None and now_version != tuple(cib_version):
        raise Stale("the cluster's configuration changed since the review (CIB version "
                    f"{cib_version} -> {now_version}): review the action again")
    new = edit_text(text, e)
    try:
        parse_desired(new, source=src.path)
    except DesiredStateError as exc:
        raise EditError("the edited file would not be valid: " + "; ".join(exc.problems)) \
            from None
    _write_atomically(path, new)
    src.audit.write([AuditRecord(
        at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), who=f"user:{user}",
        outcome="applied", kind="desired-edit", reconciler="web", action=describe_edit(e),
        why="confirmed after review in the web view", before=file_sha256, after=sha256(new))])
    committed = _git_commit(path, user, describe_edit(e))
    src.after_write()
    return {"written": True, "file_sha256": sha256(new), "git": committed}


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file beside it, then rename: a reader sees the old file or the new one."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
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
