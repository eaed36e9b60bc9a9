"""`kvm-warden status`: each VM, where it runs, whether that is what was asked, its console."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import msgspec

from controller.engine.observe import observe_once
from controller.model.desired import load_desired
from controller.model.errors import WardenError
from controller.model.observed import ObservedState
from controller.model.overview import StatusDoc, VmRow, vm_rows
from probes.libvirt.domains import list_domains


def render_table(rows: tuple[VmRow, ...]) -> str:
    head = f"{'VM':<10} {'RESOURCE':<12} {'NODE':<8} {'STATE':<10} {'DESIRED':<16} {'DRIFT':<18} CONSOLE"
    lines = [head, "-" * len(head)]
    for r in rows:
        desired = f"{r.desired_state or '-'}@{r.desired_node or 'any'}"
        lines.append(
            f"{r.vm:<10} {r.resource:<12} {','.join(r.nodes) or '-':<8} {r.state:<10} "
            f"{desired:<16} {', '.join(r.drift) or 'none':<18} {r.console or '-'}")
    return "\n".join(lines)


def fetch_rows(url: str) -> tuple[VmRow, ...]:
    """The rows a running controller serves on /status."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=10) as r:
            return msgspec.json.decode(r.read(), type=StatusDoc).vms
    except (urllib.error.URLError, OSError, msgspec.DecodeError) as exc:
        raise WardenError(f"{url}: cannot read /status: {exc}") from None


def status_command(url: str | None, desired_path: str | None, cib_file: str | None,
                   libvirt_uri: str | None, as_json: bool) -> int:
    if url:
        rows = fetch_rows(url)
    else:
        desired = load_desired(desired_path) if desired_path else None
        observed, _ = observe_once(cib_file)
        if libvirt_uri:
            observed = ObservedState(status=observed.status, cib=observed.cib,
                                     domains={socket.gethostname(): list_domains(libvirt_uri)})
        rows = vm_rows(observed, desired)
    if as_json:
        print(json.dumps(msgspec.to_builtins(rows), indent=2))
    else:
        print(render_table(rows))
    return 0
