"""Benchmark: the web view's /api/vms with 5,000 VMs (issue 13: p99 <= 50 ms).

Served from the controller's held state, encoded once per pass and shared by every reader. The
benchmark invalidates that encoding every 10 requests (as if a pass ended every second at 10
requests/s), so re-encoding is in the figures; it also times one VM's page data.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.plan import cib_file, desired_yaml, observed_from  # noqa: E402
from controller.actuators.pacemaker import PacemakerActuator  # noqa: E402
from controller.app.http import StatusServer  # noqa: E402
from controller.app.web import WebView  # noqa: E402
from controller.engine.desired_store import DesiredStore  # noqa: E402
from controller.engine.loop import Controller, PassResult, Published  # noqa: E402
from controller.engine.observe import Reading  # noqa: E402
from controller.model.overview import StatusDoc, vm_rows  # noqa: E402


def timed(url: str, n: int, every: int, view: WebView) -> tuple[list[float], int]:
    samples, size = [], 0
    for i in range(n):
        if every and i % every == 0:
            view.passed()
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as r:
            size = len(r.read())
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples, size


def main() -> None:
    nodes, vms = 32, 5000
    cib = cib_file(nodes, vms)
    observed = observed_from(cib)
    work = Path(tempfile.mkdtemp(prefix="kvm-warden-bench-"))
    (work / "desired.yaml").write_text(desired_yaml(nodes, vms))
    store = DesiredStore(str(work / "desired.yaml"))
    store.poll()
    desired = store.current
    assert desired is not None

    def source() -> Reading:
        raise RuntimeError("the benchmark serves held state only")

    controller = Controller(source=source, actuator=PacemakerActuator(str(cib)),  # type: ignore[arg-type]
                            desired=store)
    controller.view = Published(last=PassResult((), ()), observed=observed,
                                rows=vm_rows(observed, desired))
    view = WebView(controller)
    server = StatusServer("127.0.0.1", 0, lambda: StatusDoc(), lambda: (True, "ready"), None, view)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        for path, every, target in (("/api/vms", 10, 50.0), ("/api/vms", 0, 50.0),
                                    ("/api/vms/00042", 0, 50.0)):
            samples, size = timed(base + path, 200, every, view)
            p50, p99 = statistics.median(samples) * 1000, samples[int(len(samples) * 0.99) - 1] * 1000
            what = f"{path} ({'re-encoded every 10 requests' if every else 'cached'})"
            print(f"{what:<52} {vms} VMs: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"{size / 1024:.0f} KiB; target p99 <= {target:.0f} ms: "
                  f"{target / p99:.1f}x headroom")
        render(base, vms)
    finally:
        server.stop()


def render(base: str, vms: int) -> None:
    """The browser's side: headless Chromium loads the page and draws the node cards and the
    list's first page (operator: every card's VM with its actions)."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import chromium

    with tempfile.TemporaryDirectory() as profile:
        drv = chromium(Path(profile))
        try:
            drv.set_window_size(1280, 900)
            times = []
            for _ in range(3):
                drv.get(base + "/")
                WebDriverWait(drv, 120, poll_frequency=0.05).until(
                    lambda d: d.execute_script("return document.body.dataset.loaded"))
                ms = drv.execute_script("return performance.now()")  # since navigation began
                times.append(float(ms))
            cards = drv.execute_script("return document.querySelectorAll('#cards li').length")
            print(f"{'browser: page load -> cards and list drawn':<52} {vms} VMs "
                  f"({cards} on cards): best {min(times):.0f} ms, worst {max(times):.0f} ms")
        finally:
            drv.quit()


if __name__ == "__main__":
    main()
