"""The web view tells the truth at a glance, in a real browser (headless Chromium, Selenium)
against `kvm-warden run --simulate`: the header's summary and the node cards agree with the API
and with libvirt (capacity), a failed VM (a monitor failure injected with `crm_simulate -i`) and
a paused guest (libvirt's test driver, `test:runstate` 3) and a VM in a live migration (a
pending migrate_to in its history) show their badge in the list and on
their card, and a VM that does not exist gets a real 404 page. With KVM_WARDEN_SCREENSHOTS=DIR
(`make screenshots`) the README's pictures are written there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lxml import etree
from selenium import webdriver
from selenium.webdriver.common.by import By

from probes.libvirt.domains import os_release
from tests.browser import chromium, waiter
from tests.integration.test_web_view import rows, warden  # noqa: F401  (the fixture)

RUNSTATE_NS = "http://libvirt.org/schemas/domain/test/1.0"


def api(url: str) -> Any:
    with urllib.request.urlopen(url + "/api/vms", timeout=10) as r:
        return json.loads(r.read())


def health(drv: webdriver.Chrome, where: str) -> dict[str, str]:
    """VM -> the state badge's health in the list (`#vms`) or on the node cards (`#cards`)."""
    got = drv.execute_script(
        f"return Object.fromEntries([...document.querySelectorAll('{where} [data-vm]')]"
        ".map((e) => [e.dataset.vm, e.querySelector('.state').dataset.health]))")
    return {str(k): str(v) for k, v in got.items()}


def pending_migration(cib: Path, rid: str, source: str, target: str) -> None:
    """A migrate_to of `rid` from `source` to `target` the executor has not answered yet
    (op-status -1, rc 193: what Pacemaker records while an operation runs)."""
    tree = etree.parse(str(cib))
    (history,) = tree.xpath(f"//node_state[@uname='{source}']//lrm_resource[@id='{rid}']")
    etree.SubElement(history, "lrm_rsc_op", {
        "id": f"{rid}_migrate_to_0", "operation_key": f"{rid}_migrate_to_0",
        "operation": "migrate_to", "crm_feature_set": "3.16.1",
        "transition-key": "5:9:0:00000000-0000-0000-0000-000000000000",
        "transition-magic": "-1:193;5:9:0:00000000-0000-0000-0000-000000000000",
        "call-id": "-1", "rc-code": "193", "op-status": "-1", "interval": "0",
        "last-rc-change": str(int(time.time())), "exec-time": "0", "queue-time": "0",
        "migrate_source": source, "migrate_target": target})
    new = cib.with_name("pending.xml")
    tree.write(str(new))
    shutil.move(new, cib)


def stack_cells(drv: webdriver.Chrome) -> dict[str, dict[str, str]]:
    """clone -> node -> the state its cell in the storage chain row shows."""
    got = drv.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#clones tbody tr')].map("
        "(r) => [r.dataset.clone, Object.fromEntries([...r.querySelectorAll('td[data-node]')]"
        ".map((c) => [c.dataset.node, c.dataset.state]))]))")
    return {str(k): {str(n): str(st) for n, st in v.items()} for k, v in got.items()}


def shoot(drv: webdriver.Chrome, name: str, tmp: Path) -> None:
    out = Path(os.environ.get("KVM_WARDEN_SCREENSHOTS") or tmp)
    out.mkdir(parents=True, exist_ok=True)
    assert drv.save_screenshot(str(out / name))


def test_summary_cards_badges_and_real_error_pages(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    url, desired = warden
    work = desired.parent  # the simulated cluster: cib.xml and each node's libvirt file
    drv = chromium(tmp_path / "profile")
    wait = waiter(drv, 60)
    try:
        drv.set_window_size(1280, 900)
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        doc = api(url)
        s = doc["summary"]
        assert (s["quorum"], s["fencing"], s["vms"], s["running"]) == (True, True, 3, 3)
        assert s["desired_valid"] is True and s["last_pass_at"] is not None
        text = drv.find_element(By.ID, "cluster-summary").text
        assert "quorum" in text and "fencing on" in text and "3 VMs: 3 running" in text
        # capacity: the test driver's host (8 CPUs, 16 GiB) and each guest's <vcpu>/<memory>
        for n in doc["nodes"]:
            card = drv.find_element(By.CSS_SELECTOR, f"#cards .card[data-node='{n['name']}']")
            guests = [v for v in doc["vms"] if n["name"] in v["nodes"]]
            assert (n["host_cpus"], n["vcpus"]) == (8, 2 * len(guests))
            assert f"vCPU {2 * len(guests)} / 8" in card.text
            assert f"memory {2.0 * len(guests):.1f} / 16.0 GiB" in card.text
            # what runs there, as its agent says: this machine's release (each simulated node's
            # agent runs here), libvirt's own version
            assert n["release"] == os_release() and n["release"] in card.text
            assert n["libvirt"] and f"libvirt {n['libvirt']}" in card.text
        assert set(health(drv, "#vms").values()) == {"ok"} == set(health(drv, "#cards").values())
        # the CPU its guests use (libvirt's CPU time; the simulated guests': loads.json)
        busy = doc["vms"][0]
        (work / "loads.json").write_text(json.dumps({busy["vm"]: 1.5}))
        node = busy["nodes"][0]
        wait.until(lambda d: "CPU used 1.50 / 8 cores" in d.find_element(
            By.CSS_SELECTOR, f"#cards .card[data-node='{node}']").text)
        assert {n["name"]: n["cpu_used"] for n in api(url)["nodes"]} == {
            n: (1.5 if n == node else 0.0) for n in ("kvm1", "kvm2", "kvm3")}
        # the storage chain, dlm first, started on every node, and the fence device
        assert stack_cells(drv) == {c: {n: "started" for n in ("kvm1", "kvm2", "kvm3")}
                                    for c in ("dlm-clone", "clvmd-clone", "gfs2_res01-clone")}
        assert [r.get_attribute("data-clone") for r in drv.find_elements(
            By.CSS_SELECTOR, "#clones tbody tr")] == ["dlm-clone", "clvmd-clone",
                                                       "gfs2_res01-clone"]
        fencing = drv.find_element(By.ID, "fencing").text
        assert "fencing: on" in fencing and "fence-kvm (fence_dummy) on kvm1" in fencing
        shoot(drv, "web-view.png", tmp_path)
        # "last pass N s ago" counts up between passes (checked where no pass came between)
        for _ in range(10):
            loaded = drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
            before = drv.find_element(By.ID, "last-pass").text
            time.sleep(2.2)
            if drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == loaded:
                assert drv.find_element(By.ID, "last-pass").text != before
                break
        else:
            raise AssertionError("a pass came every 2 s: the count could not be watched")
        # the icon a browser asks for by itself is there (no 404 in every browser's log)
        with urllib.request.urlopen(url + "/favicon.ico", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/svg+xml" and b"<svg" in r.read()

        # web01's monitor fails where it runs: FAILED, although Pacemaker's role says Started
        web01 = rows(drv)["web01"]
        injected = work / "injected.xml"
        subprocess.run(["crm_simulate", "-x", str(work / "cib.xml"), "-O", str(injected), "-i",
                        f"vm-web01_monitor_10000@{web01}=7"], check=True, capture_output=True,
                       timeout=60)
        shutil.move(injected, work / "cib.xml")
        # and GFS2's monitor fails on kvm3: its cell, and the failed action under the chain
        subprocess.run(["crm_simulate", "-x", str(work / "cib.xml"), "-O", str(injected), "-i",
                        "gfs2_res01_monitor_10000@kvm3=7"], check=True, capture_output=True,
                       timeout=60)
        shutil.move(injected, work / "cib.xml")
        wait.until(lambda d: stack_cells(d)["gfs2_res01-clone"]["kvm3"] == "failed")
        failures = drv.find_element(By.ID, "stack-failures").text
        assert "failed: gfs2_res01: monitor on kvm3: not running (rc 7" in failures
        assert "vm-web01" not in failures  # a VM's failure is on its row, not here
        # and db01's guest is paused in its node's libvirt (an I/O error, say)
        db01 = rows(drv)["db01"]
        node_xml = work / f"{db01}.xml"
        node_xml.write_text(re.sub(
            r"<domain type='test'><name>db01</name>",
            f"<domain type='test' xmlns:test='{RUNSTATE_NS}'><name>db01</name>"
            "<test:runstate>3</test:runstate>", node_xml.read_text()))
        wait.until(lambda d: health(d, "#vms").get("web01") == "failed"
                   and health(d, "#vms").get("db01") == "paused")
        assert health(drv, "#cards") == health(drv, "#vms")
        assert health(drv, "#vms")["web02"] == "ok"
        badge = drv.find_element(By.CSS_SELECTOR, "#vms tr[data-vm='web01'] .state")
        assert "failed" in badge.text and "FAILED (Started)" in str(badge.get_attribute("title"))
        wait.until(lambda d: "1 failed" in d.find_element(By.ID, "cluster-summary").text
                   and "1 paused" in d.find_element(By.ID, "cluster-summary").text)
        s = api(url)["summary"]
        assert (s["failed"], s["paused"]) == (1, 1) and s["findings"]["critical"] >= 1
        # a paused guest is not also "running": each VM counted once
        assert (s["running"], s["stopped"]) == (1, 0)
        wait.until(lambda d: "3 VMs: 1 running" in d.find_element(By.ID, "cluster-summary").text)
        shoot(drv, "web-view-failed.png", tmp_path)

        # web02 in the middle of a live migration: a migrate_to still pending in its node's
        # history, which crm_mon shows as role Migrating
        web02 = rows(drv)["web02"]
        pending_migration(work / "cib.xml", "vm-web02", web02,
                          next(n for n in ("kvm1", "kvm2", "kvm3") if n != web02))
        wait.until(lambda d: health(d, "#vms").get("web02") == "migrating"
                   and health(d, "#cards").get("web02") == "migrating")
        badge = drv.find_element(By.CSS_SELECTOR, "#vms tr[data-vm='web02'] .state")
        assert "migrating" in badge.text
        drv.find_element(By.CSS_SELECTOR, "#vms tr[data-vm='web01'] a.vm").click()
        wait.until(lambda d: "failed" in d.find_element(By.CSS_SELECTOR, "#summary dd.role").text)
        shoot(drv, "vm-page.png", tmp_path)
        # its storage as the storage reconciler derives it, with why (db01 declares none)
        drv.get(url + "/vm/db01")
        wait.until(lambda d: "/kvm/storage" in d.find_element(By.ID, "storage").text)
        assert drv.find_element(By.ID, "storage").text == (
            "gfs2_storage: gfs2_res01-clone at /kvm/storage (after clvmd-clone, dlm-clone) — "
            "its domain XML /kvm/storage/xml/db01.xml is under /kvm/storage")

        # a VM that does not exist: a real 404 page, for the browser and for the API
        drv.get(url + "/vm/nosuch")
        assert drv.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "404"
        assert "no VM named nosuch" in drv.find_element(By.ID, "detail").text
        try:
            urllib.request.urlopen(url + "/api/vms/nosuch", timeout=10)
            raise AssertionError("/api/vms/nosuch answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and json.loads(exc.read())["error"] == "no such VM"
            exc.close()
        # and the old status page is the web view
        drv.get(url + "/status.html")
        wait.until(lambda d: d.current_url == url + "/")
    finally:
        drv.quit()

