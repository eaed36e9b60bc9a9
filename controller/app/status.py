"""`kvm-warden status`: each VM, where it runs, whether that is what was asked, its console."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request

import msgspec

from controller.app.text import for_terminal, one_line
from controller.engine.decide import decide_pass
from controller.engine.guard import Guard
from controller.engine.observe import observe_once
from controller.engine.pipeline import drift, drift_by_resource
from controller.model.desired import load_desired
from controller.model.errors import WardenError
from controller.model.index import build_index
from controller.model.observed import ObservedState
from controller.model.overview import NodeRow, StatusDoc, VmRow, node_rows, state_text, vm_rows
from probes.libvirt.domains import list_domains


def render_table(rows: tuple[VmRow, ...]) -> str:
    head = (f"{'VM':<10} {'RESOURCE':<12} {'NODE':<8} {'STATE':<18} {'LIBVIRT':<18} "
            f"{'DESIRED':<16} {'DRIFT':<18} CONSOLE")
    lines = [head, "-" * len(head)]
    for r in rows:
        desired = f"{r.desired_state or '-'}@{r.desired_node or 'any'}"
        lines.append(one_line(
            f"{r.vm:<10} {r.resource:<12} {','.join(r.nodes) or '-':<8} {state_text(r):<18} "
            f"{','.join(map(str, r.libvirt)) or '-':<18} {desired:<16} {', '.join(r.drift) or 'none':<18} "
            f"{r.console or '-'}"))
        notes = (f"desired: {r.desired_note}",) if r.desired_note else ()
        for flag in (*r.flags, *r.failures, *notes):  # the whole truth, under the row
            lines.append(one_line(f"{'':<10} ! {flag}"))
    return "\n".join(lines)


def render_nodes(nodes: tuple[NodeRow, ...]) -> str:
    """Drains and maintenance: one line per node not simply online, with what is left on it."""
    lines = []
    for n in nodes:
        if n.desired_state in (None, "online") and not (n.standby or n.maintenance):
            continue
        state = "maintenance" if n.maintenance else "standby" if n.standby else "online"
        want = f" (desired: {n.desired_state})" if n.desired_state and n.desired_state != state else ""
        if n.standby and n.vms:
            progress = f"draining, {len(n.vms)} VM(s) left: {', '.join(n.vms)}"
        elif n.standby:
            progress = "drained"
        else:
            progress = f"{len(n.vms)} VM(s)"
        lines.append(one_line(f"node {n.name}: {state}{want}, {progress}"))
    return "\n".join(lines)


def fetch_status(url: str, cacert: str | None = None) -> StatusDoc:
    """What a running controller serves on /status. Behind a web configuration: the user and
    password from KVM_WARDEN_USER / KVM_WARDEN_PASSWORD, the server's CA from `cacert`."""
    import base64
    import os
    import ssl

    req = urllib.request.Request(url.rstrip("/") + "/status",
                                 headers={"Accept": "application/json"})
    user, password = os.environ.get("KVM_WARDEN_USER"), os.environ.get("KVM_WARDEN_PASSWORD")
    if user and password is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode())
    ctx = ssl.create_default_context(cafile=cacert) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return msgspec.json.decode(r.read(), type=StatusDoc)
    except urllib.error.HTTPError as exc:
        exc.close()
        hint = " (set KVM_WARDEN_USER and KVM_WARDEN_PASSWORD)" if exc.code == 401 else ""
        raise WardenError(f"{url}: cannot read /status: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, msgspec.DecodeError) as exc:
        raise WardenError(f"{url}: cannot read /status: {exc}") from None


def status_command(url: str | None, desired_path: str | None, cib_file: str | None,
                   libvirt_uri: str | None, as_json: bool, cacert: str | None = None) -> int:
    banner: list[str] = []
    if url:
        doc = fetch_status(url, cacert)
        rows, nodes = doc.vms, doc.nodes
        if doc.desired is not None and not doc.desired.valid:
            banner.append(f"!! the desired file {doc.desired.path} is invalid; the last good "
                          f"one (generation {doc.desired.generation}) stays in force: "
                          + "; ".join(doc.desired.errors[:5]))
        if doc.last_pass is not None and doc.last_pass.error:
            banner.append(f"!! the last pass failed: {doc.last_pass.error}")
    else:
        desired = load_desired(desired_path) if desired_path else None
        observed, _ = observe_once(cib_file)
        if libvirt_uri:
            observed = ObservedState(status=observed.status, cib=observed.cib,
                                     domains={socket.gethostname(): list_domains(libvirt_uri)})
        index = build_index(observed)
        now = time.time()
        # The findings a pass would report (a failed VM, a ban...), with a fresh ledger.
        decided = decide_pass(index, desired, Guard(), now, now) if desired else None
        findings = decided.findings if decided else ()
        rows = vm_rows(observed, desired, findings, index.fail_counts,
                       drift_by_resource(drift(decided.decisions, findings)) if decided
                       else None)
        nodes = node_rows(observed, desired)
    if as_json:
        for line in banner:
            print(f"kvm-warden: {line}", file=sys.stderr)
        print(json.dumps(msgspec.to_builtins(rows), indent=2))
    else:
        for line in banner:  # loud, on top (stderr would be missed in a pipe to less)
            print(for_terminal(line))
        print(for_terminal(render_table(rows)))
        drains = render_nodes(nodes)
        if drains:
            print(for_terminal(drains))
    return 0
