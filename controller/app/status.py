"""The VM overview: which VM runs where, whether that is what was asked, and its console."""

from __future__ import annotations

from typing import Any

from controller.model.desired import DesiredState
from controller.model.observed import ObservedState


def vm_rows(observed: ObservedState, desired: DesiredState | None) -> list[dict[str, Any]]:
    status = observed.status
    wanted = {vm.resource_id: vm for vm in (desired.vms if desired else ())}
    ids = [r.id for r in status.resources if r.agent.endswith(":VirtualDomain")]
    ids += [rid for rid in wanted if rid not in ids]
    domains = {(node, name): d for node, doms in observed.domains.items()
               for name, d in doms.items()}
    rows = []
    for rid in ids:
        inst = status.instances(rid)
        nodes = sorted({n for r in inst if r.active for n in r.nodes})
        role = inst[0].role if inst else "absent"
        vm = wanted.get(rid)
        name = vm.name if vm else rid.removeprefix("vm-")
        desired_state = vm.state if vm else None
        desired_node = vm.placement.prefer if vm else None
        allowed = vm.placement.allowed if vm else None
        drift = []
        if vm and not inst:
            drift.append("no resource")
        if desired_state == "running" and not nodes:
            drift.append("not running")
        if desired_state == "stopped" and nodes:
            drift.append("running")
        if desired_node and nodes and desired_node not in nodes:
            drift.append(f"not on {desired_node}")
        if allowed and any(n not in allowed for n in nodes):
            drift.append("on a disallowed node")
        node = nodes[0] if len(nodes) == 1 else None
        dom = domains.get((node, name)) if node else None
        port = dom.vnc_port if dom else None
        rows.append({
            "vm": name, "resource": rid, "nodes": nodes, "state": role,
            "desired_state": desired_state, "desired_node": desired_node,
            "drift": drift, "vnc_port": port,
            "console": (f"ssh -L {port}:127.0.0.1:{port} admin@{node}  "
                        f"# then vncviewer localhost:{port - 5900}") if port and node else None,
        })
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'VM':<10} {'RESOURCE':<12} {'NODE':<8} {'STATE':<10} {'DESIRED':<16} {'DRIFT':<18} CONSOLE"
    lines = [head, "-" * len(head)]
    for r in rows:
        desired = f"{r['desired_state'] or '-'}@{r['desired_node'] or 'any'}"
        lines.append(
            f"{r['vm']:<10} {r['resource']:<12} {','.join(r['nodes']) or '-':<8} {r['state']:<10} "
            f"{desired:<16} {', '.join(r['drift']) or 'none':<18} {r['console'] or '-'}")
    return "\n".join(lines)


def status_command(url: str | None, desired_path: str | None, cib_file: str | None,
                   libvirt_uri: str | None, as_json: bool) -> int:
    import json
    import socket
    import urllib.error
    import urllib.request

    from controller.model.errors import WardenError

    if url:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=10) as r:
                rows = json.loads(r.read())["vms"]
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            raise WardenError(f"{url}: cannot read /status: {exc}") from None
    else:
        from controller.app.plan import observe_once
        from controller.model.desired import load_desired
        from controller.model.observed import ObservedState
        from probes.libvirt.domains import list_domains

        desired = load_desired(desired_path) if desired_path else None
        observed, _ = observe_once(cib_file)
        if libvirt_uri:
            observed = ObservedState(status=observed.status, cib=observed.cib,
                                     domains={socket.gethostname(): list_domains(libvirt_uri)})
        rows = vm_rows(observed, desired)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 0
