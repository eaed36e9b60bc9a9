"""Operating from the web view in a real browser (headless Chromium, Selenium): node cards
that match crm_mon, a move chosen on a node card reviewed (the diff, Pacemaker's transition)
and confirmed, the file changed only there, and the page following the simulated cluster
without a reload; usable at 420 px."""

from __future__ import annotations

import difflib
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium
from tests.integration.test_web_view import rows, warden  # noqa: F401  (the fixture)


def cards(drv: webdriver.Chrome) -> dict[str, list[str]]:
    got = drv.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#cards .card')].map((c) =>"
        " [c.dataset.node, [...c.querySelectorAll('li[data-vm]')].map((li) => li.dataset.vm)]))")
    return {str(k): sorted(v) for k, v in got.items()}


def test_a_move_from_a_node_card_is_reviewed_confirmed_and_followed(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    url, desired = warden
    drv = chromium(tmp_path / "profile")
    wait = WebDriverWait(drv, 60, poll_frequency=0.1)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3 and cards(d))
        # every node has a card, and each VM is on the card of the node the list says
        placed = rows(drv)
        assert set(cards(drv)) == {"kvm1", "kvm2", "kvm3"}
        for node, vms in cards(drv).items():
            assert vms == sorted(v for v, n in placed.items() if n == node)
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
