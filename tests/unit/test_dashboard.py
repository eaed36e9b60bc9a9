"""The Grafana dashboard shows only what kvm-warden exports, with a unit on every panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASH = json.loads((ROOT / "config" / "grafana" / "kvm-warden.json").read_text())
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]
SUFFIXES = ("_bucket", "_count", "_sum")


def documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "metrics.md").read_text(),
                          re.M))


def test_every_dashboard_query_names_a_documented_metric() -> None:
    catalog = documented()
    named = {(p["title"], m) for p in PANELS for t in p["targets"]
             for m in re.findall(r"kvm_warden_[a-z_]+", t["expr"])}
    unknown = {(title, m) for title, m in named
               if m not in catalog and not (m.endswith(SUFFIXES)
                                            and re.sub(r"_(bucket|count|sum)$", "", m) in catalog)}
    assert named and unknown == set()


def test_every_panel_has_a_unit_and_every_query_its_cluster() -> None:
    assert [p["title"] for p in PANELS if not p["fieldConfig"]["defaults"].get("unit")] == []
    unscoped = [t["expr"] for p in PANELS for t in p["targets"]
                for sel in re.findall(r"kvm_warden_[a-z_]+(\{[^}]*\})?", t["expr"])
                if 'instance=~"$cluster"' not in sel]
    assert unscoped == []
    assert {v["name"] for v in DASH["templating"]["list"]} >= {"cluster", "node", "datasource"}


def test_what_kvm_warden_exists_to_find_has_a_panel() -> None:
    exprs = " ".join(t["expr"] for p in PANELS for t in p["targets"])
    for metric in ("kvm_warden_findings", "kvm_warden_split_brain_findings",
                   "kvm_warden_vm_paused", "kvm_warden_out_of_band_total",
                   "kvm_warden_operator_ban", "kvm_warden_vm_failcount",
                   "kvm_warden_actions_held", "kvm_warden_desired_state_valid"):
        assert metric in exprs, metric
    unclean = next(p for p in PANELS if p["title"].startswith("Unclean"))
    assert [s["value"] for s in unclean["fieldConfig"]["defaults"]["thresholds"]["steps"]] == \
        [None, 1]


def test_the_vm_table_is_one_table() -> None:
    table = next(p for p in PANELS if p["title"].startswith("VMs:"))
    assert table["transformations"][0]["id"] == "merge"
    assert "group_left(node)" in table["targets"][0]["expr"]
