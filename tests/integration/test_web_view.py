"""The web view in a real browser: headless Chromium driven by Selenium through Debian's
chromedriver, against `kvm-warden run --simulate` (Pacemaker's tools on the embedded cluster).
Load the list, filter it, open a VM's page, and watch a change in the cluster arrive in the
open page without a reload."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import chromium, waiter
from tests.waiting import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def warden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path_factory.mktemp("web") / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                                 "--http-port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("the first pass", lambda: "desired state:" in log.read_text()
                 and "pass" in log.read_text(), 60)
        desired = Path(re.search(r"desired state:\s+(\S+)", log.read_text()).group(1))  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        LOGS[url] = log
        # The embedded cluster starts with fencing off and VMs off their preferred nodes: the
        # first passes change it. Each test starts from the settled cluster, not mid-way.
        wait_for("the simulated cluster settled", lambda: settled(url), 120)
        yield url, desired
    finally:
        proc.terminate()
        proc.wait(timeout=30)


LOGS: dict[str, Path] = {}


def demo_login(url: str) -> tuple[str, str]:
    """The operator `run --simulate` made and printed (the port is read-only to anyone else)."""
    m = re.search(r"web user:\s+(\S+)\s+password: (\S+)", LOGS[url].read_text())
    assert m is not None, "run --simulate prints its web user"
    return m.group(1), m.group(2)


def settled(url: str) -> bool:
    with urllib.request.urlopen(url + "/api/vms", timeout=10) as r:
        s = json.loads(r.read())["summary"]
    return bool(s["fencing"] and s["running"] == s["vms"] == 3 and s["drifting"] == 0
                and s["last_pass_at"] is not None and not s["last_pass_error"])


def undrained(url: str, desired: Path, kept: str, node: str = "kvm3") -> None:
    """After a test's upgrade: the file as it was with `node` declared online (a plain name
    declares no state, and the upgrade left it in standby), then as it was, settled."""
    from tests.waiting import wait_for

    desired.write_text(kept.replace("nodes: [kvm1, kvm2, kvm3]", "nodes: [" + ", ".join(
        f"{{name: {n}, state: online}}" if n == node else n for n in ("kvm1", "kvm2", "kvm3"))
        + "]"))
    wait_for(f"{node} back and the cluster settled", lambda: settled(url), 120)
    desired.write_text(kept)
    wait_for("settled on the file as it was", lambda: settled(url), 60)


def rows(drv: webdriver.Chrome) -> dict[str, str]:
    """VM name -> its node cell, as the page shows them (read in one go: the live page may
    re-render between two WebDriver calls)."""
    got = drv.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#vms tbody tr')]"
        ".map((tr) => [tr.dataset.vm, tr.querySelector('td.node').textContent]))")
    return {str(k): str(v) for k, v in got.items()}


def test_list_filter_vm_page_and_live_update_without_reload(
        warden: tuple[str, Path], tmp_path: Path) -> None:
    url, desired = warden
    drv = chromium(tmp_path / "profile")
    wait = waiter(drv, 30)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        assert set(rows(drv)) == {"web01", "web02", "db01"}
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        # The node chips lead to each node's card; the card links to that node's pcsd.
        links = {a.text.split()[0]: a.get_attribute("href")
                 for a in drv.find_elements(By.CSS_SELECTOR, "#nodes a")}
        assert links == {n: f"{url}/#node-{n}" for n in ("kvm1", "kvm2", "kvm3")}
        pcsd = {c.get_attribute("data-node"): c.find_element(By.CSS_SELECTOR, "a.pcsd")
                .get_attribute("href") for c in drv.find_elements(By.CSS_SELECTOR, "#cards .card")}
        assert pcsd == {n: f"https://{n}:2224/" for n in ("kvm1", "kvm2", "kvm3")}
        # Search filters client-side; the node filter too.
        drv.find_element(By.ID, "q").send_keys("web01")
        wait.until(lambda d: list(rows(d)) == ["web01"])
        drv.find_element(By.ID, "q").clear()
        drv.execute_script("document.getElementById('q').dispatchEvent(new Event('input'))")
        wait.until(lambda d: len(rows(d)) == 3)
        db01_node = rows(drv)["db01"]
        drv.execute_script(f"const s = document.getElementById('node'); s.value = '{db01_node}';"
                           "s.dispatchEvent(new Event('change'))")
        wait.until(lambda d: "db01" in rows(d) and all(n == db01_node for n in rows(d).values()))
        # Click a VM: its page says where it runs and why.
        drv.find_element(By.CSS_SELECTOR, "#vms tbody tr[data-vm='db01'] a.vm").click()
        wait.until(lambda d: d.current_url.endswith("/vm/db01"))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#summary dd.node").text == db01_node)
        ids = [td.text for td in drv.find_elements(By.CSS_SELECTOR, "#constraints tbody td:first-child")]
        assert "warden-order-gfs2_res01-clone-vm-db01" in ids  # kvm-warden's storage safety
        # Back to the list; change the cluster; the open page follows without reloading.
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        drv.execute_script("window.__sameDocument = true")
        target = next(n for n in ("kvm1", "kvm2", "kvm3") if n != db01_node)
        desired.write_text(desired.read_text().replace(
            "    state: running\npolicy:",
            f"    state: running\n    placement: {{prefer: {target}}}\npolicy:"))
        t0 = time.monotonic()
        waiter(drv, 60).until(lambda d: rows(d).get("db01") == target)
        print(f"desired edit -> simulated cluster moved db01 -> page shows it: "
              f"{time.monotonic() - t0:.1f} s")
        assert drv.execute_script("return window.__sameDocument") is True
    finally:
        drv.quit()


def test_the_api_documents_vms_one_vm_and_history(warden: tuple[str, Path]) -> None:
    import json
    import urllib.request

    url, _ = warden

    def get(path: str) -> object:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return json.loads(r.read())

    doc: Any = get("/api/vms")
    assert {v["vm"] for v in doc["vms"]} == {"web01", "web02", "db01"}
    assert {n["name"] for n in doc["nodes"]} == {"kvm1", "kvm2", "kvm3"}
    assert doc["console"] is False  # no web configuration: no console
    one: Any = get("/api/vms/web01")
    assert one["vm"]["resource"] == "vm-web01"
    assert any(c["id"] == "warden-prefer-vm-web01" and c["owned"] for c in one["constraints"])
    assert one["storage"][0]["resource"] == "gfs2_res01-clone"
    history: Any = get("/api/history?vm=web01")
    assert any(e["kind"] == "action" for e in history["events"])
    with pytest.raises(urllib.error.HTTPError) as err:
        get("/api/vms/nosuchvm")
    assert err.value.code == 404
    err.value.close()


def test_the_grafana_vm_table_links_each_vm_to_its_page_here(warden: tuple[str, Path]) -> None:
    import json
    import urllib.request

    url, _ = warden
    dash = json.loads((Path(__file__).resolve().parents[2] / "config" / "grafana"
                       / "kvm-warden.json").read_text())
    table = next(p for p in dash["panels"] if p["title"].startswith("VMs:"))
    (link,) = table["fieldConfig"]["overrides"][0]["properties"][0]["value"]
    variable = next(v for v in dash["templating"]["list"] if v["name"] == "kvm_warden_url")
    # As Grafana fills it in for the row of web01, against this controller:
    href = link["url"].replace("${kvm_warden_url}", url).replace("${__data.fields.vm}", "web01")
    assert variable["type"] == "textbox" and href == f"{url}/vm/web01"
    with urllib.request.urlopen(href, timeout=10) as r:
        assert r.status == 200 and b"vm.js" in r.read()


def test_an_invalid_desired_file_is_a_banner_on_every_page(
        warden: tuple[str, Path], tmp_path: Path) -> None:
    url, desired = warden
    good = desired.read_text()
    drv = chromium(tmp_path / "profile")
    wait = waiter(drv, 30)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        assert not drv.find_element(By.ID, "banner").is_displayed()
        assert "dry_run: false" in good
        desired.write_text(good.replace("dry_run: false", "dry_run: nope"))  # a typo
        wait.until(lambda d: d.find_element(By.ID, "banner").is_displayed())
        text = drv.find_element(By.ID, "banner").text
        assert f"{desired} is invalid since" in text and "policy.dry_run" in text
        assert "the last good file stays in force" in text
        drv.get(url + "/vm/web01")  # the VM page says it too
        wait.until(lambda d: d.find_element(By.ID, "banner").is_displayed())
        desired.write_text(good)
        wait.until(lambda d: not d.find_element(By.ID, "banner").is_displayed())
    finally:
        desired.write_text(good)
        drv.quit()
