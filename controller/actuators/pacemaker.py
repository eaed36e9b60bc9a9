"""Applies admitted actions to Pacemaker: one CIB patch per pass, then crm_resource calls.

The patch is made the way `pcs cluster cib-push` makes one: edit a copy of the CIB we read,
let `crm_diff` compute a v2 patchset between the two, apply it with `cibadmin --patch`. The
patchset names the CIB version it was computed from, so if anybody changed the CIB since we
read it, Pacemaker refuses it (exit 103, "Update was older than existing configuration") and
we re-read and re-plan instead of overwriting their change. cibadmin also validates the result
against the CIB schema, so a bad edit is refused whole.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lxml import etree
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from controller import commands
from controller.actuators.cibedit import CibEditor, EditError
from controller.model import names
from controller.model.actions import (
    CIB_ACTIONS,
    AnyAction,
    Cleanup,
    ExportConfig,
    FailResource,
    ForgetResource,
    Outcome,
)
from controller.model.errors import ActuatorError, ParseError, ToolError, WardenError
from probes.pacemaker.cib import failure_attributes
from probes.pacemaker.read import cib_version, query_cib, query_status
from probes.xmlparse import parse_document

CRM_EX_DISCONNECT = 102  # lost the connection to the CIB manager: transient
CRM_EX_OLD = 103  # the patch was made against an older CIB: a conflict, re-plan
CRM_EX_TIMEOUT = 124
TRANSIENT = (CRM_EX_DISCONNECT, CRM_EX_TIMEOUT)
TOOL_TIMEOUT = 60.0


class CibConflict(ActuatorError):
    """The CIB changed between our read and our patch."""


def without_positions(patch: bytes) -> bytes:
    """Drop `position` from the patch's create operations.

    Pacemaker 2.1.5 applies a positioned create by walking its siblings, which makes a patch of
    500 new constraints take 7.5 s on a 16 x 1,000 CIB file; without `position` the element is
    appended and the same patch takes 0.3 s. Nothing kvm-warden creates depends on sibling
    order (constraints, nvpairs, meta_attributes blocks, rule expressions joined by "and").
    """
    root = parse_document(patch, source="crm_diff", exact=True)
    for change in root.iter("change"):
        if change.get("operation") == "create" and "position" in change.attrib:
            del change.attrib["position"]
    return etree.tostring(root)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ToolError) and not isinstance(exc, CibConflict) and (
        exc.returncode in TRANSIENT or exc.returncode is None and "timed out" in str(exc)
    )


_retry = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(3),
    wait=wait_random_exponential(multiplier=0.2, max=2.0),
    reraise=True,
)


# (node, domain, path) -> the sha256 of what the node's agent wrote (bus/console.request)
Exporter = Callable[[str, str, str], str]


class PacemakerActuator:
    """Changes a live cluster (cib_file=None) or a CIB file (like `pcs -f`). `exporter` reaches
    the agents, for the one action that is not Pacemaker's: writing a domain's XML file."""

    def __init__(self, cib_file: str | None = None, exporter: Exporter | None = None):
        self.cib_file = cib_file
        self.exporter = exporter

    @_retry
    def query(self) -> bytes:
        return query_cib(self.cib_file, timeout=TOOL_TIMEOUT)

    def apply(self, actions: Sequence[AnyAction], cib: bytes | None = None) -> list[Outcome]:
        """Apply CIB actions as one patch, then the others one by one. Raises CibConflict."""
        outcomes: list[Outcome] = []
        cib_actions: list[AnyAction] = [a for a in actions if isinstance(a, CIB_ACTIONS)]
        # Offline, a cleanup is a status edit and rides in the same patch (see cibedit).
        if self.cib_file is not None:
            cib_actions += [a for a in actions if isinstance(a, Cleanup | ForgetResource)]
        others = [a for a in actions if a not in cib_actions]
        if cib_actions:
            outcomes += self._patch(cib_actions, cib if cib is not None else self.query())
        for action in others:
            outcomes.append(self._run_one(action))
        return outcomes

    def _patch(self, actions: Sequence[AnyAction], original: bytes) -> list[Outcome]:
        started = time.monotonic()
        try:
            root = parse_document(original, source="the CIB we read", exact=True)
        except ParseError as exc:
            raise ActuatorError(["cibadmin"], f"the CIB we read is not XML: {exc}") from None
        editor = CibEditor(root)
        edits: list[tuple[AnyAction, str | None, str | None, str | None]] = []
        for action in actions:
            try:
                before, after = editor.apply(action)
                edits.append((action, before, after, None))
            except EditError as exc:
                edits.append((action, None, None, str(exc)))
        root.set("epoch", str(int(root.get("epoch", "0")) + 1))
        root.set("num_updates", "0")
        if any(err is None for *_, err in edits):
            self._push(original, etree.tostring(root))
        duration = time.monotonic() - started
        return [
            Outcome(action=a, applied=err is None, error=err, before=b, after=af, duration=duration)
            for a, b, af, err in edits
        ]

    def _push(self, original: bytes, new: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="kvm-warden-") as tmp:
            old_path, new_path = Path(tmp, "old.xml"), Path(tmp, "new.xml")
            old_path.write_bytes(original)
            new_path.write_bytes(new)
            # crm_diff exits 1 when the documents differ (its normal case here), 0 when equal.
            diff = commands.run(["crm_diff", "--original", str(old_path), "--new", str(new_path)],
                            timeout=TOOL_TIMEOUT, ok_codes=(0, 1))
            if diff.returncode == 0:
                return
            patch_path = Path(tmp, "patch.xml")
            patch_path.write_bytes(self._rebase(without_positions(diff.stdout)))
            self._cibadmin_patch(patch_path)

    def _rebase(self, patch: bytes) -> bytes:
        """Let status churn through, stop on configuration changes.

        Pacemaker refuses a patchset whose source version is older than the CIB, num_updates
        included -- and num_updates moves with every status update (each operation result), so
        on a busy cluster a patch computed a second ago would always be "older". Our patches
        touch configuration only (admin_epoch/epoch), so: re-read the CIB's version just before
        patching; a different epoch is a real conflict (re-plan); a different num_updates is
        status, and the patch's source is moved to it.
        """
        root = parse_document(patch, source="crm_diff", exact=True)
        source = root.find("version/source")
        if source is None:
            return patch
        now = cib_version(self.cib_file, timeout=TOOL_TIMEOUT)
        if now.configuration != (source.get("admin_epoch"), source.get("epoch")):
            raise CibConflict(["cibadmin"], "the CIB configuration changed since it was read")
        source.set("num_updates", now.num_updates or "0")
        return etree.tostring(root)

    @_retry
    def _cibadmin_patch(self, patch_path: Path) -> None:
        try:
            commands.run(["cibadmin", "--patch", "--xml-file", str(patch_path)],
                     env=commands.tool_env(self.cib_file), timeout=TOOL_TIMEOUT)
        except ToolError as exc:
            if exc.returncode == CRM_EX_OLD or "older than existing" in exc.stderr:
                raise CibConflict(exc.argv, "the CIB changed since it was read",
                                  returncode=exc.returncode, stderr=exc.stderr) from None
            raise ActuatorError(exc.argv, str(exc), returncode=exc.returncode,
                                stderr=exc.stderr) from None

    def _run_one(self, action: AnyAction) -> Outcome:
        started = time.monotonic()
        try:
            if isinstance(action, Cleanup):
                self._cleanup(action)
            elif isinstance(action, FailResource):
                self._fail(action)
            elif isinstance(action, ForgetResource):
                names.resource_id(action.rsc)
                commands.run(["crm_resource", "--refresh", "--resource", action.rsc],
                             env=commands.tool_env(None), timeout=TOOL_TIMEOUT)
            elif isinstance(action, ExportConfig):
                if self.exporter is None:
                    raise ActuatorError(["kvm-warden"], "no agents to write a domain's XML")
                digest = self.exporter(action.node, action.domain, action.path)
                return Outcome(action=action, applied=True, after=f"sha256 {digest}",
                               duration=time.monotonic() - started)
            else:
                raise ActuatorError(["kvm-warden"], f"no actuator for {type(action).__name__}")
        except WardenError as exc:  # a failing tool, or a name that must not reach one
            return Outcome(action=action, applied=False, error=str(exc),
                           duration=time.monotonic() - started)
        return Outcome(action=action, applied=True, duration=time.monotonic() - started)

    def _fail(self, action: FailResource) -> None:
        # Not retried: a second --fail would count a second failure.
        names.resource_id(action.rsc)
        names.node_name(action.node)
        commands.run(["crm_resource", "--fail", "--resource", action.rsc, "--node", action.node],
                     env=commands.tool_env(self.cib_file), timeout=TOOL_TIMEOUT)

    def _reset_failcount(self, rsc: str, node: str) -> None:
        """Unset the resource's fail-count and last-failure attributes on the node in
        pacemaker-attrd, which owns them, and nothing else: its operation history stays.
        (`crm_failcount --delete` is `crm_resource --cleanup`, which erases the history.)"""
        status = query_status(None, timeout=TOOL_TIMEOUT)
        for name in failure_attributes(status, rsc, node, source="cibadmin --query --scope status"):
            commands.run(["attrd_updater", "--delete", "--name", name, "--node", node],
                         env=commands.tool_env(None), timeout=TOOL_TIMEOUT)

    @_retry
    def _cleanup(self, action: Cleanup) -> None:
        names.resource_id(action.rsc)
        for node in (*action.sources, action.node):
            names.node_name(node)
        if action.reset_only:
            self._reset_failcount(action.rsc, action.node)
            return
        # Migration sources first (see Cleanup): at no instant may the target's history be gone
        # while a source still records a migrate_to towards it. --refresh, because --cleanup
        # leaves a node without failures untouched; the source has none (health checked).
        for verb, node in [*(("--refresh", s) for s in action.sources),
                           ("--cleanup", action.node)]:
            commands.run(["crm_resource", verb, "--resource", action.rsc, "--node", node],
                         env=commands.tool_env(None), timeout=TOOL_TIMEOUT)
