"""The real browser the browser tests drive: Debian's chromium through its chromium-driver
(installed by scripts/install-deps.sh; nothing is downloaded at test time)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


def chromium(profile: Path, basic_auth: tuple[str, str] | None = None) -> webdriver.Chrome:
    """A headless chromium with its own profile directory; with `basic_auth`, every request it
    makes (the page, its API calls, the console's WebSocket) carries those credentials."""
    if shutil.which("chromedriver") is None or shutil.which("chromium") is None:
        pytest.fail("chromium and chromium-driver are not installed (make test installs them)")
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--ignore-certificate-errors"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    if basic_auth is not None:
        token = base64.b64encode(":".join(basic_auth).encode()).decode()
        drv.execute_cdp_cmd("Network.enable", {})
        drv.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                            {"headers": {"Authorization": f"Basic {token}"}})
    return drv


def waiter(drv: webdriver.Chrome, timeout: float) -> WebDriverWait[webdriver.Chrome]:
    """A wait that polls every 0.1 s and reads through re-renders: the view replaces its
    elements on every refresh, so an element found a moment ago can be gone when read (a stale
    reference is "not yet", not a failure)."""
    return WebDriverWait(drv, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,))
