"""The declared rolling upgrade in the web view, in a real browser (headless Chromium) against
`kvm-warden run --simulate` of its own (the glance tests leave their cluster failed and paused
on purpose): the panel above the node cards follows the cluster node by node."""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import chromium, waiter
from tests.integration.test_web_glance import api
from tests.integration.test_web_view import rows, settled, undrained, warden  # noqa: F401
from tests.waiting import wait_for


def test_the_rolling_upgrade_panel_follows_the_cluster(
        warden: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """A declared rolling upgrade as the page shows it: kvm3 drained (db01 live-migrates
    away) and then "ready to upgrade", the others waiting, the step in words. Every simulated
    node reports this machine's release, so the target is one none runs yet. (kvm1 first would
    be held: web01 and web02 are anti-affine and web02 may only run on kvm1 or kvm2.)"""

    url, desired = warden
    wait_for("the simulated cluster settled", lambda: settled(url), 120)
    before = desired.read_text()
    drv = chromium(tmp_path / "profile")
    wait = waiter(drv, 90)
    try:
        drv.get(url + "/")
        wait.until(lambda d: len(rows(d)) == 3)
        assert drv.find_element(By.ID, "upgrade").is_displayed() is False
        desired.write_text(before + "upgrade:\n  to: Debian 99\n  order: [kvm3, kvm1, kvm2]\n")

        def steps(d: webdriver.Chrome) -> dict[str, str]:
            got: dict[str, str] = d.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#upgrade-steps li')]"
                ".map((li) => [li.dataset.node, li.dataset.step]))")
            return got

        wait.until(lambda d: steps(d).get("kvm3") == "ready")
        assert steps(drv) == {"kvm3": "ready", "kvm1": "waiting", "kvm2": "waiting"}
        panel = drv.find_element(By.ID, "upgrade").text
        assert "Rolling upgrade to Debian 99: 0 of 3 nodes done" in panel
        assert "kvm3 is ready to upgrade: in standby and empty" in panel
        assert "kvm3" not in rows(drv).values()  # its VM went elsewhere
        assert api(url)["upgrade"]["nodes"][0]["step"] == "ready"
        # the timeline: each step as it happened, from the history
        drv.execute_script("document.getElementById('upgrade-timeline-box').open = true;")
        wait.until(lambda d: "ready to upgrade" in d.find_element(By.ID, "upgrade-timeline").text)
        timeline = drv.find_element(By.ID, "upgrade-timeline").text.splitlines()
        drained = next(i for i, t in enumerate(timeline) if "draining kvm3" in t)
        ready = next(i for i, t in enumerate(timeline) if "kvm3 is ready to upgrade" in t)
        assert drained < ready, timeline
    finally:
        drv.quit()
        undrained(url, desired, before)  # abandoning an upgrade: its drained node online
