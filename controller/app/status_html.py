"""A small read-only HTML page of the VM overview: no scripts, no external assets, all escaped."""

from __future__ import annotations

from html import escape

from controller.model.overview import StatusDoc, VmRow, state_text

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;font-size:.95em}"
    "th{background:#f0f0f0}tr.drift td{background:#fff4e5}"
    "code{font-size:.9em}.ok{color:#1a7f37}.bad{color:#b35900}"
)


def _row(vm: VmRow) -> str:
    cells = [
        escape(vm.vm),
        escape(vm.resource),
        escape(", ".join(vm.nodes) or "-"),
        (f"<span class='bad' title='{escape('; '.join(vm.flags + vm.failures), quote=True)}'>"
         f"{escape(state_text(vm))}</span>" if vm.flags else escape(vm.state)),
        escape(f"{vm.desired_state or '-'} @ {vm.desired_node or 'any'}"),
        (f"<span class='bad'>{escape(', '.join(vm.drift))}</span>" if vm.drift
         else "<span class='ok'>none</span>"),
        escape(str(vm.vnc_port or "-")),
        f"<code>{escape(vm.console)}</code>" if vm.console else "-",
    ]
    cls = " class='drift'" if vm.drift else ""
    return f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_status_html(doc: StatusDoc) -> str:
    rows = "".join(_row(vm) for vm in doc.vms)
    desired = doc.desired
    head = ("<tr><th>VM</th><th>Resource</th><th>Node</th><th>State</th><th>Desired</th>"
            "<th>Drift</th><th>VNC</th><th>Console</th></tr>")
    errors = "".join(f"<li>{escape(e)}</li>" for e in (desired.errors if desired else ()))
    findings = "".join(f"<li>{escape(f)}</li>"
                       for f in (doc.last_pass.findings if doc.last_pass else ()))
    valid = desired is not None and desired.valid
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kvm-warden status</title>"
        f"<style>{STYLE}</style></head><body><h1>kvm-warden</h1>"
        f"<p>Desired state: <code>{escape(str(desired.path if desired else ''))}</code>, "
        f"generation {desired.generation if desired else 0}, "
        f"{'valid' if valid else '<b class=bad>INVALID</b>'}</p>"
        + (f"<ul class='bad'>{errors}</ul>" if errors else "")
        + f"<table id='vms'>{head}{rows}</table>"
        + (f"<h2>Findings</h2><ul>{findings}</ul>" if findings else "")
        + "</body></html>"
    )
