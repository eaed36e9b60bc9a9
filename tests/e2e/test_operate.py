"""Operating the real lab from the web view: in headless Chromium (Selenium) an operator moves a
real KVM guest from its node card -- reviewed (the diff, Pacemaker's transition) and confirmed --,
the desired file changes on that one line, Pacemaker live-migrates the guest (qemu started with
`-incoming` on the target), and the console open in another tab follows it to the new node."""

from __future__ import annotations

import base64
import difflib
import threading
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By

from lab import lab
from tests.browser import chromium, waiter
from tests.e2e.conftest import Lab, converged
from tests.e2e.test_console import NONBLACK, web  # noqa: F401  (the fixture)
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def incoming_seen(node: str, guest: str, stop: threading.Event, seen: list[str]) -> None:
    """Samples `node`'s qemu processes of `guest` until stopped: records `-incoming` if seen."""
    while not stop.is_set():
        for pid in lab.node_pids(node, f"guest={guest}"):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-incoming" in argv:
                seen.append(pid)
                return
        time.sleep(0.05)


def test_a_real_guest_moved_from_its_node_card_migrates_live_and_the_console_follows(
        cluster: Lab, web: str, tmp_path: Path) -> None:  # noqa: F811
    wait_for("converged", converged, 180)
    assert lab.vms_running()["vm-web02"] == ["kvm2"]
    before = cluster.desired.read_text()
    drv = chromium(tmp_path / "profile", (lab.HA_USER, lab.HA_PASSWORD))
    wait = waiter(drv, 60)
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    sampler = threading.Thread(target=incoming_seen, args=("kvm3", "web02", stop, seen))
    try:
        # the console of web02, open in one tab
        drv.get(f"{web}/vm/web02#console")
        wait.until(lambda d: d.execute_script("return document.body.dataset.console") == "connected"
                   and d.execute_script(NONBLACK) > 100)
        console_tab = drv.current_window_handle
        assert drv.execute_script("return document.body.dataset.consoleNode") == "kvm2"
        # the node cards in another: web02 on kvm2's card, moved to kvm3
        drv.switch_to.new_window("tab")
        token = base64.b64encode(f"{lab.HA_USER}:{lab.HA_PASSWORD}".encode()).decode()
        drv.execute_cdp_cmd("Network.enable", {})  # a new tab is a new target: its own headers
        drv.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                            {"headers": {"Authorization": f"Basic {token}"}})
        drv.get(f"{web}/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                             "#cards .card[data-node='kvm2'] li[data-vm='web02']"))
        # One script per step: a pass may re-draw the cards between two WebDriver calls.
        drv.execute_script("document.querySelector(\"#cards li[data-vm='web02'] button.act\")"
                           ".click()")

        def reviewed() -> str | None:
            """Choose kvm3 and read the review; None (and cancel) while the guard refuses it.
            kvm-warden's own cooldown on web02's placement (10 s after the lab's last change)
            no longer does: the review shows the move and says when the loop makes it."""
            drv.execute_script(
                "const m = document.querySelector(\"#cards li[data-vm='web02'] select.move\");"
                "m.value = 'kvm3'; m.dispatchEvent(new Event('change'));")
            try:
                wait.until(lambda d: d.find_element(By.ID, "confirm").is_enabled())
            except TimeoutException:
                raise AssertionError("no confirmable review: "
                                     + drv.find_element(By.ID, "review-body").text) from None
            body = str(drv.find_element(By.ID, "review-body").text)
            if "— cooldown" in body:
                drv.find_element(By.ID, "cancel").click()
                return None
            return body

        body = wait_for("a review with Pacemaker's transition", reviewed, 60, 2)
        assert "prefer: kvm3" in body
        transition = drv.find_element(By.CSS_SELECTOR, "#review ul.transition").text
        assert "vm-web02" in transition and "kvm3" in transition, body
        assert cluster.desired.read_text() == before  # the review wrote nothing
        sampler.start()
        t0 = time.monotonic()
        drv.find_element(By.ID, "confirm").click()
        wait.until(lambda d: d.find_element(By.ID, "review").get_attribute("open") is None)
        changed = [line for line in difflib.unified_diff(
            before.splitlines(), cluster.desired.read_text().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert changed == ["-    placement: {prefer: kvm2}", "+    placement: {prefer: kvm3}"]
        wait_for("web02 on kvm3", lambda: lab.vms_running().get("vm-web02") == ["kvm3"], 120)
        print(f"confirm clicked -> web02 running on kvm3: {time.monotonic() - t0:.1f} s")
        stop.set()
        sampler.join(timeout=5)
        assert seen, "no qemu -incoming of web02 seen on kvm3: not a live migration"
        # the card follows without a reload, and so does the console in the first tab
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                             "#cards .card[data-node='kvm3'] li[data-vm='web02']"))
        drv.switch_to.window(console_tab)
        waiter(drv, 60).until(
            lambda d: d.execute_script("return document.body.dataset.consoleNode") == "kvm3"
            and d.execute_script("return document.body.dataset.console") == "connected"
            and d.execute_script(NONBLACK) > 100)
    finally:
        stop.set()
        drv.quit()
        cluster.write_desired()
    wait_for("converged", converged, 180)
