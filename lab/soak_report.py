"""The soak's report: report.json, and report.html, a page with no external assets: a timeline
of faults, heals, kvm-warden's applied changes and violations, faults by kind with their
recovery p50/p95/max, the violations with the seed and the time to reproduce them, and the
controller's memory over time (an inline SVG plot)."""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.chaos import Report


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 1)


def by_kind(report: Report) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({f.kind for f in report.faults}):
        mine = [f for f in report.faults if f.kind == kind]
        rec = sorted(r for f in mine if (r := f.recovery_s) is not None)
        outage = sorted(o for f in mine if (o := f.outage_s) is not None)
        out[kind] = {"count": len(mine), "waited": sum(f.waited for f in mine),
                     "recovered": len(rec), "p50_s": quantile(rec, 0.5),
                     "p95_s": quantile(rec, 0.95), "max_s": max(rec) if rec else None,
                     "outage_p50_s": quantile(outage, 0.5),
                     "outage_max_s": max(outage) if outage else None}
    return out


def as_dict(report: Report) -> dict[str, Any]:
    s = report.samples
    rss = [(round(u.at - report.started, 1), u.rss_kb, u.threads) for u in s.usage]
    recoveries = sorted(r for f in report.faults if (r := f.recovery_s) is not None)
    return {
        "seed": report.seed, "minutes": report.minutes,
        "duration_s": round(report.ended - report.started, 1),
        "faults": report.by_kind(), "by_kind": by_kind(report),
        "recovery_s": {"p50": quantile(recoveries, 0.5), "p95": quantile(recoveries, 0.95),
                       "max": max(recoveries) if recoveries else None},
        "violations": [{"t_s": round(at - report.started, 1), "what": what,
                        "reproduce": f"make soak SEED={report.seed} MINUTES={report.minutes:g}"}
                       for at, what in report.violations],
        "unverified": report.unverified,
        "converged_after_s": report.converged_after_s,
        "samples": {"proc": len(s.proc_times), "pacemaker_views": len(s.views),
                    "healthz": len(s.health),
                    "healthz_failed": sum(1 for h in s.health if h.expected and not h.ok),
                    "controller_usage": len(s.usage), "state_counts": len(s.counts)},
        "controller": {"rss_kb_first": rss[0][1] if rss else None,
                       "rss_kb_last": rss[-1][1] if rss else None,
                       "rss_kb_max": max((r[1] for r in rss), default=None),
                       "threads_max": max((r[2] for r in rss), default=None),
                       "starts": len(s.starts)},
        "timeline": [{"kind": f.kind, "target": f.target, "vms": f.vms,
                      "t_s": round(f.at - report.started, 1),
                      "healed_t_s": None if f.healed is None else round(f.healed - report.started,
                                                                        1),
                      "recovery_s": f.recovery_s, "outage_s": f.outage_s, "waited": f.waited}
                     for f in report.faults],
        "rss": rss,
    }


def summary(report: Report) -> str:
    d = as_dict(report)
    lines = [f"soak: seed {d['seed']}, {d['duration_s'] / 60:.1f} min, "
             f"{sum(d['faults'].values())} faults, {len(d['violations'])} violations, "
             f"recovery p50 {d['recovery_s']['p50']} s p95 {d['recovery_s']['p95']} s, "
             f"controller RSS {d['controller']['rss_kb_first']} -> "
             f"{d['controller']['rss_kb_last']} kB"]
    lines += [f"  {k:16} {v['count']:3}  recovery p50 {v['p50_s']} s  p95 {v['p95_s']} s  max "
              f"{v['max_s']} s; fault to converged p50 {v['outage_p50_s']} s"
              for k, v in d["by_kind"].items()]
    lines += [f"  VIOLATION at t={v['t_s']} s: {v['what']}" for v in d["violations"]]
    lines += [f"  not judged: {u}" for u in d["unverified"]]
    return "\n".join(lines)


def _svg_memory(rss: list[tuple[float, int, int]], width: int = 900, height: int = 180) -> str:
    if len(rss) < 2:
        return "<p>no memory samples</p>"
    t_max = max(r[0] for r in rss) or 1.0
    top = max(r[1] for r in rss) * 1.1
    pts = " ".join(f"{r[0] / t_max * width:.1f},{height - r[1] / top * height:.1f}" for r in rss)
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="controller RSS over time">'
            f'<rect width="{width}" height="{height}" fill="#f6f6f6"/>'
            f'<polyline fill="none" stroke="#2a6" stroke-width="1.5" points="{pts}"/>'
            f'<text x="4" y="14" font-size="12">{top / 1.1 / 1024:.0f} MiB max</text>'
            f'<text x="{width - 4}" y="{height - 4}" font-size="12" text-anchor="end">'
            f'{t_max / 60:.0f} min</text></svg>')


def _svg_timeline(d: dict[str, Any], audits: list[float], width: int = 900) -> str:
    span = d["duration_s"] or 1.0
    kinds = sorted(d["by_kind"])
    row, height = 16, 16 * (len(kinds) + 2) + 10
    x = lambda t: f"{max(0.0, t) / span * (width - 130) + 130:.1f}"  # noqa: E731
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'role="img" aria-label="timeline">']
    for i, kind in enumerate(kinds):
        y = row * (i + 1)
        parts.append(f'<text x="0" y="{y + 11}" font-size="11">{html.escape(kind)}</text>')
        for f in (f for f in d["timeline"] if f["kind"] == kind):
            end = f["healed_t_s"] if f["healed_t_s"] is not None else f["t_s"]
            rec = (f["recovery_s"] or 0.0)
            parts.append(f'<rect x="{x(f["t_s"])}" y="{y}" height="12" fill="#d44" '
                         f'width="{max(1.5, (end - f["t_s"]) / span * (width - 130)):.1f}">'
                         f'<title>{html.escape(f["target"])} at {f["t_s"]} s</title></rect>')
            if rec:
                parts.append(f'<rect x="{x(end)}" y="{y + 4}" height="4" fill="#e9a" '
                             f'width="{rec / span * (width - 130):.1f}"/>')
    y = row * (len(kinds) + 1)
    parts.append(f'<text x="0" y="{y + 11}" font-size="11">kvm-warden</text>')
    parts += [f'<rect x="{x(t)}" y="{y}" width="1.5" height="12" fill="#26a"/>' for t in audits]
    parts += [f'<line x1="{x(v["t_s"])}" x2="{x(v["t_s"])}" y1="0" y2="{height}" stroke="#000" '
              f'stroke-dasharray="3"><title>{html.escape(v["what"])}</title></line>'
              for v in d["violations"]]
    parts.append("</svg>")
    return "".join(parts)


def page(report: Report, audits: list[float]) -> str:
    d = as_dict(report)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['count']}</td><td>{v['waited']}</td>"
        f"<td>{v['p50_s']}</td><td>{v['p95_s']}</td><td>{v['max_s']}</td>"
        f"<td>{v['outage_p50_s']}</td><td>{v['outage_max_s']}</td></tr>"
        for k, v in d["by_kind"].items())
    violations = "".join(
        f"<li>t={v['t_s']} s: {html.escape(v['what'])} — <code>{html.escape(v['reproduce'])}"
        "</code></li>" for v in d["violations"]) or "<li>none</li>"
    c = d["controller"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>kvm-warden soak, seed {d['seed']}</title><style>
body{{font:14px system-ui,sans-serif;margin:2em;max-width:960px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>kvm-warden soak</h1>
<p>Seed {d['seed']}, {d['duration_s'] / 60:.1f} minutes, {sum(d['faults'].values())} faults,
<b>{len(d['violations'])} violations</b>. Recovery (heal to converged) p50
{d['recovery_s']['p50']} s, p95 {d['recovery_s']['p95']} s, max {d['recovery_s']['max']} s.
Converged {d['converged_after_s']} s after the last fault. Samples: {d['samples']}.</p>
<h2>Timeline</h2><p>Red: a fault held; pink: the recovery after its heal; blue: a change
kvm-warden applied; dashed: a violation.</p>{_svg_timeline(d, audits)}
<h2>Faults by kind</h2><table><tr><th>kind</th><th>count</th><th>waited for</th>
<th>recovery p50 s</th><th>p95 s</th><th>max s</th><th>fault to converged p50 s</th>
<th>max s</th></tr>{rows}</table>
<p>Recovery: from the heal to the cluster converged on the desired file, when the nemesis
waited for it (otherwise the next fault came first).</p>
<h2>Violations</h2><ul>{violations}</ul>
<h2>Controller memory</h2><p>RSS {c['rss_kb_first']} kB at the start, {c['rss_kb_last']} kB at
the end, {c['rss_kb_max']} kB at most; at most {c['threads_max']} threads; {c['starts']} starts
or resumes.</p>{_svg_memory([tuple(r) for r in d['rss']])}
</body></html>
"""


def write(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "report.json", out / "report.html"
    j.write_text(json.dumps(as_dict(report), indent=2) + "\n")
    h.write_text(page(report, [a - report.started for a in report.applied]))
    return j, h
