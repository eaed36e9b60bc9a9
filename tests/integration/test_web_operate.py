"""Operating from the web view in a real browser (headless Chromium, Selenium): node cards
that match crm_mon, a move chosen on a node card reviewed (the diff, Pacemaker's transition)
and confirmed, the file changed only there, and the page following the simulated cluster
without a reload; usable at 420 px."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests import cibs
from tests.browser import chromium, waiter
from tests.integration.test_web_glance import health, shoot
from tests.integration.test_web_view import (  # noqa: F401
    demo_login,
    rows,
    settled,
    undrained,
    warden,
)
from tests.simulated import add_outside_domain
from tests.waiting import wait_for


def cards(drv: webdriver.Chrome) -> dict[str, list[str]]:
    got = drv.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#cards .card')].map((c) =>"
        " [c.dataset.node, [...c.querySelectorAll('li[data-vm]')].map((li) => li.dataset.vm)]))")
    return {str(k): sorted(v) for k, v in got.items()}


def test_a_move_from_a_node_card_is_reviewed_confirmed_and_followed(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    url, desired = warden
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 60)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3 and cards(d))
        # every node has a card, and each VM is on the card of the node the list says
        placed = rows(drv)
        assert set(cards(drv)) == {"kvm1", "kvm2", "kvm3"}
        for node, vms in cards(drv).items():
            assert vms == sorted(v for v, n in placed.items() if n == node)
        # and where Pacemaker itself says each runs (crm_resource --locate on the CIB)
        cib = desired.parent / "cib.xml"
        for vm, node in placed.items():
            assert cibs.locate(cib, f"vm-{vm}") == [node], vm
        source = placed["db01"]
        target = next(n for n in ("kvm1", "kvm2", "kvm3") if n not in placed.values()) \
            if len(set(placed.values())) < 3 else next(n for n in ("kvm1", "kvm2", "kvm3")
                                                       if n != source)
        before = desired.read_bytes()
        # one script per step: a pass may re-draw the cards between two WebDriver calls
        drv.execute_script("document.querySelector('#cards li[data-vm=\"db01\"] button.act').click()")
        drv.execute_script("const m = document.querySelector('#cards li[data-vm=\"db01\"] select.move');"
                           f"m.value = '{target}'; m.dispatchEvent(new Event('change'));")
        wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is not None
                   and "prefer" in d.find_element(By.CSS_SELECTOR, "#review pre.diff").text)
        diff = drv.find_element(By.CSS_SELECTOR, "#review pre.diff").text
        assert f"+    placement: {{prefer: {target}}}" in diff
        transition = drv.find_element(By.CSS_SELECTOR, "#review ul.transition").text
        assert "vm-db01" in transition and target in transition
        assert desired.read_bytes() == before  # a review writes nothing
        wait.until(lambda d: d.find_element(By.ID, "confirm").is_enabled())
        drv.find_element(By.ID, "confirm").click()
        wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is None)
        after = desired.read_text()
        changed = [line for line in difflib.unified_diff(
            before.decode().splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert changed == [f"+    placement: {{prefer: {target}}}"]
        # the simulated cluster converges, and the open page shows it (no reload)
        wait.until(lambda d: rows(d).get("db01") == target)
        wait.until(lambda d: "db01" in cards(d).get(target, []))
        # a narrow window: no sideways scrolling
        drv.set_window_size(420, 900)
        wait.until(lambda d: d.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"))
    finally:
        drv.quit()


def test_a_failed_vm_is_cleaned_up_from_its_card_through_a_reviewed_edit(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """db01's monitor fails (injected with crm_simulate): its card offers "clean up"; the
    review shows the one line the file gets and the cleanup health will ask of Pacemaker;
    confirmed, the loop has Pacemaker clean it and the page shows it healthy again."""
    url, desired = warden
    cib = desired.parent / "cib.xml"  # run --simulate's cluster, beside its desired file
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 60)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3 and health(d, "#vms").get("db01") == "ok")
        node = rows(drv)["db01"]
        injected = tmp_path / "injected.xml"
        subprocess.run(["crm_simulate", "-x", str(cib), "-O", str(injected), "-i",
                        f"vm-db01_monitor_10000@{node}=7"], check=True, capture_output=True,
                       timeout=60)
        shutil.move(injected, cib)
        wait.until(lambda d: health(d, "#cards").get("db01") == "failed")
        before = desired.read_bytes()
        drv.execute_script("document.querySelector('#cards li[data-vm=\"db01\"] button.act').click()")
        drv.execute_script("document.querySelector('#cards li[data-vm=\"db01\"] button.cleanup').click()")
        wait.until(lambda d: "clean_failures_before" in d.find_element(
            By.CSS_SELECTOR, "#review pre.diff").text)
        plan = drv.find_element(By.CSS_SELECTOR, "#review ul.plan").text
        # (with the refresh of its migration history first when it was live-migrated here)
        assert re.search(f"cleanup vm-db01 on {node}( \\(.*\\))? — admitted", plan), plan
        assert desired.read_bytes() == before  # a review writes nothing
        wait.until(lambda d: d.find_element(By.ID, "confirm").is_enabled())
        drv.find_element(By.ID, "confirm").click()
        wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is None)
        changed = [line for line in difflib.unified_diff(
            before.decode().splitlines(), desired.read_text().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert len(changed) == 1 and re.fullmatch(
            r"\+    clean_failures_before: '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ'", changed[0]), changed
        # the loop cleans it through Pacemaker; the open page follows without a reload
        wait.until(lambda d: health(d, "#cards").get("db01") == "ok"
                   and health(d, "#vms").get("db01") == "ok")
        mon = subprocess.run(["crm_mon", "-1", "--output-as=xml"], env={**os.environ,
                             "CIB_file": str(cib)}, capture_output=True, text=True,
                             check=True, timeout=60).stdout
        assert "vm-db01" not in mon.split("<failures>", 1)[-1] if "<failures>" in mon else True
    finally:
        drv.quit()


def test_a_domain_outside_the_cluster_is_on_its_nodes_card_with_an_enroll_review(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """web03 runs in kvm2's libvirt only: kvm2's card shows it OUTSIDE with an enroll button
    whose review shows the entry the file would get and the enrollment's first step."""
    url, desired = warden
    node_xml = desired.parent / "kvm2.xml"  # run --simulate's libvirt of kvm2
    kept = node_xml.read_text()
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 60)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        before = desired.read_bytes()
        add_outside_domain(node_xml, "web03")
        wait.until(lambda d: "web03" in cards(d).get("kvm2", []))
        assert health(drv, "#cards")["web03"] == "outside"
        drv.execute_script("document.querySelector('#cards li[data-vm=\"web03\"] button.enroll').click()")
        wait.until(lambda d: "name: web03" in d.find_element(By.CSS_SELECTOR, "#review pre.diff").text)
        diff = drv.find_element(By.CSS_SELECTOR, "#review pre.diff").text
        assert "+    placement: {prefer: kvm2}" in diff and "+    migration_transport: ssh" in diff
        plan = drv.find_element(By.CSS_SELECTOR, "#review ul.plan").text
        assert "write web03's XML from kvm2's libvirt" in plan, plan
        assert desired.read_bytes() == before  # a review writes nothing
        drv.find_element(By.ID, "cancel").click()
    finally:
        drv.quit()
        node_xml.write_text(kept)


def _review_from_vm_page(drv: webdriver.Chrome, wait: WebDriverWait, selector: str,
                         value: str | None = None) -> dict[str, object]:
    """Open a review from the VM page's own actions; what its dialog says it costs."""
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#vm-actions {selector}"))
    if value is None:
        drv.execute_script(f"document.querySelector('#vm-actions {selector}').click()")
    else:
        drv.execute_script(f"const m = document.querySelector('#vm-actions {selector}');"
                           f"m.value = '{value}'; m.dispatchEvent(new Event('change'));")
    wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is not None
               and d.find_elements(By.CSS_SELECTOR, "#review pre.diff"))
    got = drv.execute_script(
        "return {weight: document.getElementById('review').dataset.weight,"
        " costs: [...document.querySelectorAll('#review ul.consequences li')].map((l) =>"
        " [l.dataset.weight, l.textContent]),"
        " why: [...document.querySelectorAll('#review ul.plan .why')].map((w) => w.textContent),"
        " confirm: document.getElementById('confirm').textContent}")
    return dict(got)


def test_the_vm_page_acts_and_each_review_says_what_it_costs(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """Issue "Day one", 6: a stop, a retirement and a move looked alike, and the VM page had
    no actions. Now the VM page has them; a stop and a retirement are red and say what the
    VM loses; each plan line says why; a move is a warning (a live migration), and once
    confirmed says it was written, with the id of its audit record."""
    url, desired = warden
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 60)
    audit = desired.parent / "state" / "audit.jsonl"
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        drv.get(url + "/vm/web02")
        stop = _review_from_vm_page(drv, wait, "button.stop")
        assert stop["weight"] == "danger" and stop["costs"][0] == [  # type: ignore[index]
            "danger", "web02 will be shut down and stay down: no failover, no restart, until "
            "it is started again"]
        assert "Pacemaker would stop vm-web02" in str(stop["costs"])
        assert str(stop["confirm"]).startswith("confirm: ")
        drv.find_element(By.ID, "cancel").click()
        retire = _review_from_vm_page(drv, wait, "button.retire")
        assert retire["weight"] == "danger"
        lost = retire["costs"][0][1]  # type: ignore[index]
        assert "leaves the cluster's care" in lost and "nothing moves it if its node dies" \
            in lost and "its anti-affinity with web01" in lost
        drv.find_element(By.ID, "cancel").click()
        # db01 (no anti-affinity: nothing else moves with it) moved from its own page
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        source = rows(drv)["db01"]
        target = next(n for n in ("kvm1", "kvm2", "kvm3") if n != source)
        drv.get(url + "/vm/db01")
        move = _review_from_vm_page(drv, wait, "select.move", target)
        assert move["weight"] == "warning" and any(  # a live migration, not a stop
            w == "warning" and f"live-migrate vm-db01 {source} → {target}" in t
            for w, t in move["costs"])  # type: ignore[attr-defined]
        assert move["why"] and all(str(w).startswith("why: ") for w in move["why"])  # type: ignore[attr-defined]
        wait.until(lambda d: d.find_element(By.ID, "confirm").is_enabled())
        drv.find_element(By.ID, "confirm").click()
        wait.until(lambda d: d.find_element(By.ID, "written").is_displayed())
        written = drv.find_element(By.ID, "written")
        audit_id = written.get_attribute("data-audit")
        assert audit_id and f"(audit {audit_id}" in written.text and str(desired) in written.text
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        mine = [r for r in records if r.get("id") == audit_id]
        assert len(mine) == 1 and mine[0]["kind"] == "desired-edit" and mine[0]["who"] == "user:demo"
        wait.until(lambda d: d.execute_script(
            "return document.querySelector('#summary dd.node').textContent") == target)
    finally:
        drv.quit()


def _card_click(drv: webdriver.Chrome, node: str, selector: str) -> None:
    drv.execute_script(
        f"document.querySelector('#cards .card[data-node=\"{node}\"] {selector}').click()")


def _confirm_review(drv: webdriver.Chrome, wait: WebDriverWait) -> None:
    wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is not None
               and d.find_element(By.ID, "confirm").is_enabled())
    drv.find_element(By.ID, "confirm").click()
    wait.until(lambda d: d.find_element(By.ID, "written").is_displayed())


def test_drain_and_bring_online_from_a_card_and_a_rename_that_keeps_safety(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """Issue "Day one", 1 and 2, in the browser: the card's "drain" empties kvm3 and its
    "bring online" brings it back (the card says online again, nothing drifts); then web02
    renamed to web2 in the file keeps its anti-affinity and says so on its row. With
    KVM_WARDEN_SCREENSHOTS=DIR the README's pictures of both are written there."""
    url, desired = warden
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 120)
    kept = desired.read_text()

    def card_state(d: webdriver.Chrome, node: str) -> str:
        return str(d.execute_script(
            f"const c = document.querySelector('#cards .card[data-node=\"{node}\"]');"
            "return c ? c.className : ''"))

    try:
        drv.set_window_size(1280, 1000)
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3 and "node-online" in card_state(d, "kvm3"))
        _card_click(drv, "kvm3", "button.node-action")
        _confirm_review(drv, wait)
        wait.until(lambda d: "node-standby" in card_state(d, "kvm3")
                   and "kvm3" not in rows(d).values())
        assert "drained" in drv.find_element(By.CSS_SELECTOR, "#cards .card[data-node='kvm3']").text
        _card_click(drv, "kvm3", "button.node-action")  # now "bring online"
        wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is not None
                   and "state: online" in d.find_element(By.CSS_SELECTOR, "#review pre.diff").text)
        shoot(drv, "review.png", tmp_path)
        _confirm_review(drv, wait)
        wait.until(lambda d: "node-online" in card_state(d, "kvm3") and settled(url))
        assert "matches the file" in drv.find_element(By.ID, "cluster-summary").text
        shoot(drv, "node-back-online.png", tmp_path)

        # a rename (a typo) in the file, valid (web01's anti-affinity names web2 too): web02's
        # safety stays, its row says why
        desired.write_text(desired.read_text().replace("web02", "web2"))
        wait.until(lambda d: "vm-undeclared" in d.execute_script(
            "const r = document.querySelector('#vms tr[data-vm=\"web02\"] td.findings');"
            "return r ? r.textContent : ''"))
        with urllib.request.urlopen(
                urllib.request.Request(url + "/api/vms/web02"), timeout=10) as r:
            kept_ids = {c["id"] for c in json.loads(r.read())["constraints"] if c["owned"]}
        assert "warden-anti-vm-web01-vm-web02" in kept_ids
        title = drv.execute_script(
            "return document.querySelector('#vms tr[data-vm=\"web02\"] .badge').title")
        assert "did you mean 'web2'" in title
        shoot(drv, "rename-held.png", tmp_path)
    finally:
        desired.write_text(kept)
        drv.quit()
    wait_for("the file put back in force", lambda: settled(url), 120)


def test_a_rolling_upgrade_started_and_ended_from_the_web_view(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """Issue "Rolling upgrade", 3: the operator declares the upgrade in the panel above the
    cards (target and node order), reviews it -- the diff adds `upgrade:`, the weight says the
    first node is drained -- and confirms; the panel then follows it (kvm3 drained, ready to
    upgrade), and "end the upgrade" removes the section, reviewed the same way."""
    url, desired = warden
    wait_for("the simulated cluster settled", lambda: settled(url), 120)
    kept = desired.read_text()
    drv = chromium(tmp_path / "profile", demo_login(url))
    wait = waiter(drv, 120)

    def step(d: webdriver.Chrome, node: str) -> str | None:
        got = d.execute_script(
            f"const li = document.querySelector('#upgrade-steps li[data-node=\"{node}\"]');"
            "return li ? li.dataset.step : null;")
        return str(got) if got is not None else None

    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3 and d.find_element(By.ID, "upgrade").is_displayed())
        drv.execute_script("document.querySelector('#upgrade-act details').open = true;")
        drv.find_element(By.ID, "upgrade-to").send_keys("Debian 99")
        order = drv.find_element(By.ID, "upgrade-order")
        assert order.get_attribute("value") == "kvm1, kvm2, kvm3"  # the cluster's nodes
        order.clear()
        order.send_keys("kvm3 kvm1 kvm2")
        drv.find_element(By.ID, "upgrade-start").click()
        wait.until(lambda d: "upgrade:" in d.find_element(By.CSS_SELECTOR, "#review pre.diff").text)
        review = drv.find_element(By.ID, "review-body").text
        assert "+upgrade:" in review and "+  to: Debian 99" in review
        assert "+  order: [kvm3, kvm1, kvm2]" in review
        assert "kvm3 is drained now" in review  # the weight, before anyone confirms
        _confirm_review(drv, wait)
        assert "upgrade:\n  to: Debian 99\n  order: [kvm3, kvm1, kvm2]\n" in desired.read_text()
        wait.until(lambda d: step(d, "kvm3") == "ready")
        assert (step(drv, "kvm1"), step(drv, "kvm2")) == ("waiting", "waiting")
        drv.execute_script("document.querySelector('#upgrade-act button.upgrade-end').click()")
        wait.until(lambda d: "-upgrade:" in d.find_element(By.CSS_SELECTOR, "#review pre.diff").text)
        _confirm_review(drv, wait)
        assert "upgrade:" not in desired.read_text()
        wait.until(lambda d: step(d, "kvm3") is None)
    finally:
        drv.quit()
        undrained(url, desired, kept)
