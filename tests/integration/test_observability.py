"""Observability proven on real tools: a real Prometheus scrapes `kvm-warden run`, promtool
checks the exposition and the rules, every PromQL expression of the dashboard and the rules is
evaluated through Prometheus's HTTP API, the metric catalog matches /metrics, and headless
Chromium renders the /status page."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pacemaker_tools")]
ROOT = Path(__file__).parent.parent.parent

# Dashboard expressions that are empty while nothing of their kind happens in this scenario.
MAY_BE_EMPTY = {
    'sum by (reason) (rate(kvm_warden_bus_rejected_total{instance=~".*"}[5m]))',
    'sum by (reason) (rate(kvm_warden_bus_resyncs_total{instance=~".*"}[5m]))',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        data: bytes = r.read()
        return data


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`kvm-warden run` on the simulated cluster, dry-run so drift and refusals persist, with an
    in-process agent on libvirt's test driver so the bus carries events."""
    tmp = tmp_path_factory.mktemp("warden")
    desired = tmp / "desired.yaml"
    desired.write_text((ROOT / "config" / "desired-state.example.yaml").read_text()
                       .replace("dry_run: false", "dry_run: true"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.app.cli", "run", "--simulate", "--desired", str(desired),
         "--http-port", str(port), "--libvirt-uri", "test:///default", "--watch-endpoint", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        env={**__import__("os").environ, "TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if b"kvm_warden_reconcile_passes_total" in get(f"{url}/metrics"):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.terminate()
        proc.wait(timeout=30)
        pytest.fail("kvm-warden served no pass on /metrics within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(warden: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (make test installs Debian's package)")
    tmp = tmp_path_factory.mktemp("prometheus")
    target = warden.removeprefix("http://")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{ROOT / 'config' / 'prometheus' / 'kvm-warden-rules.yml'}]\n"
        "scrape_configs:\n  - job_name: kvm-warden\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    with open(tmp / "prometheus.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if query(url, 'up{job="kvm-warden"} == 1'):
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        proc.terminate()
        proc.wait(timeout=30)
        pytest.fail("Prometheus did not scrape kvm-warden within 60 s (up == 1)")
    time.sleep(4)  # a few scrapes, so rate() has samples to work on
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def query(url: str, expr: str) -> list[Any]:
    data = json.loads(get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert data["status"] == "success", (expr, data)
    result: list[Any] = data["data"]["result"]
    return result


def dashboard_exprs() -> list[str]:
    dash = json.loads((ROOT / "config" / "grafana" / "kvm-warden.json").read_text())
    return [t["expr"].replace("$node", ".*").replace("$cluster", ".*") for p in dash["panels"]
            for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "kvm-warden-rules.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_promtool_accepts_the_exposition_and_the_rules(warden: str) -> None:
    text = get(f"{warden}/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    rules_dir = ROOT / "config" / "prometheus"
    for argv in (["promtool", "check", "rules", "kvm-warden-rules.yml"],
                 ["promtool", "test", "rules", "kvm-warden-rules.test.yml"]):
        out = subprocess.run(argv, cwd=rules_dir, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_dashboard_expression_evaluates_with_series(prometheus: str) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    empty = [e for e in exprs if not query(prometheus, e) and e not in MAY_BE_EMPTY]
    assert empty == []


def test_every_rule_expression_evaluates(prometheus: str) -> None:
    for expr in rule_exprs():
        query(prometheus, expr)  # status success; healthy parts of the scenario fire nothing
    # The scenario is dry-run with drift: the GFS2 dependency gauge is up, quorum is fine.
    assert query(prometheus, "kvm_warden_storage_dependencies_missing > 0")
    assert not query(prometheus, "kvm_warden_cluster_quorate == 0")
    rules = json.loads(get(f"{prometheus}/api/v1/rules"))["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} >= {"KvmWardenQuorumLost", "KvmWardenSplitBrain"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                      for r in rules]


def test_metric_catalog_matches_metrics_endpoint(warden: str) -> None:
    text = get(f"{warden}/metrics").decode()
    live = {m for m in re.findall(r"^# TYPE (\S+) ", text, re.M)
            if not m.startswith(("process_", "python_"))}
    catalog = set(re.findall(r"^\| `([a-z_]+)` \|",
                             (ROOT / "docs" / "metrics.md").read_text(), re.M))
    assert catalog == live


def test_the_web_view_in_headless_chromium(warden: str, tmp_path: Path) -> None:
    """The page as a browser renders it (its scripts run): every VM, the truth of each, the
    drift, and how to reach a console without the web one. The old /status.html leads here."""
    from tests.browser import chromium, waiter

    drv = chromium(tmp_path / "profile")
    try:
        drv.get(f"{warden}/status.html")
        read = ("return Object.fromEntries([...document.querySelectorAll('#vms tbody tr')]"
                ".map((tr) => [tr.dataset.vm, [...tr.cells].map((c) => c.textContent)]))")
        waiter(drv, 30).until(lambda d: len(d.execute_script(read)) == 4)
        assert drv.current_url == f"{warden}/"
        cells = drv.execute_script(read)
        # The cluster's VMs, and libvirt's test driver's own running domain `test`, which no
        # resource names: shown as running outside the cluster.
        assert set(cells) == {"web01", "web02", "db01", "test"}
        assert "outside the cluster" in cells["test"][2]
        # Dry-run: the drift stays, as the reconcilers see it (what they want, why it waits).
        assert "kvm1" in cells["web01"][1] and "web01 prefers kvm2 [dry-run]" in cells["web01"][5]
        assert "running on kvm2" in cells["web01"][4]
        assert "ssh -L" in cells["db01"][7]  # no web console here: the way by hand
    finally:
        drv.quit()
