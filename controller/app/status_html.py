"""A small read-only HTML page of the VM overview: no scripts, no external assets, all escaped."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;font-size:.95em}"
    "th{background:#f0f0f0}tr.drift td{background:#fff4e5}"
    "code{font-size:.9em}.ok{color:#1a7f37}.bad{color:#b35900}"
)


def render_status_html(doc: dict[str, Any]) -> str:
    rows = []
    for vm in doc.get("vms", []):
        drift = vm.get("drift") or []
        cells = [
            escape(str(vm.get("vm", ""))),
            escape(str(vm.get("resource", ""))),
            escape(", ".join(vm.get("nodes") or []) or "-"),
            escape(str(vm.get("state", ""))),
            escape(f"{vm.get('desired_state') or '-'} @ {vm.get('desired_node') or 'any'}"),
            (f"<span class='bad'>{escape(', '.join(drift))}</span>" if drift
             else "<span class='ok'>none</span>"),
            escape(str(vm.get("vnc_port") or "-")),
            f"<code>{escape(vm['console'])}</code>" if vm.get("console") else "-",
        ]
        cls = " class='drift'" if drift else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    desired = doc.get("desired", {})
    last = doc.get("last_pass") or {}
    head = ("<tr><th>VM</th><th>Resource</th><th>Node</th><th>State</th><th>Desired</th>"
            "<th>Drift</th><th>VNC</th><th>Console</th></tr>")
    errors = "".join(f"<li>{escape(e)}</li>" for e in desired.get("errors", []))
    findings = "".join(f"<li>{escape(f)}</li>" for f in last.get("findings", []))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kvm-warden status</title>"
        f"<style>{STYLE}</style></head><body><h1>kvm-warden</h1>"
        f"<p>Desired state: <code>{escape(str(desired.get('path', '')))}</code>, generation "
        f"{escape(str(desired.get('generation', 0)))}, "
        f"{'valid' if desired.get('valid', False) else '<b class=bad>INVALID</b>'}</p>"
        + (f"<ul class='bad'>{errors}</ul>" if errors else "")
        + f"<table id='vms'>{head}{''.join(rows)}</table>"
        + (f"<h2>Findings</h2><ul>{findings}</ul>" if findings else "")
        + "</body></html>"
    )
