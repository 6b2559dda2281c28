"""The page's screenshots in docs/page.md, retaken: the slides' 3-4-1 example with a unit worked out
(page.png), a weight edited (page-edit.png), the batch view (page-batch.png) and the landscape
(page-landscape.png), at 1280 px, plus whole-page views at desktop and phone width for looking at.

    .venv/bin/python docs/screenshots.py [OUT]      # OUT: a folder, default build/screenshots

It serves models/ from .venv-run (make run's venv) with web/ort (make web) on free loopback ports,
drives Debian's chromium-headless-shell, and writes OUT/*.png; copy the four named above into docs/.
"""

import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "screenshots")
OUT.mkdir(parents=True, exist_ok=True)
BATCH = "0.1, 0.2, 0.3\n-0.1, -0.2, -0.3\n1, 0, -1\n0.5, 0.5, 0.5"  # the walkthrough's four examples


def free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


http, grpc = free(), free()
server = subprocess.Popen(
    [
        str(ROOT / ".venv-run/bin/forwardpass"),
        "serve",
        "--model-repository",
        str(ROOT / "models"),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--workers",
        "1",
        "--ort-web-dir",
        str(ROOT / "web/ort"),
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready")
            break
        except OSError:
            time.sleep(0.2)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium-headless-shell")
        for name, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", {"width": 390, "height": 844})):
            ctx = b.new_context(viewport=viewport, device_scale_factor=1)
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{http}/")
            page.locator('body[data-pending="0"]').wait_for(state="attached", timeout=30000)
            page.wait_for_timeout(800)
            page.locator('#drawing circle[data-unit="1:2"]').click()
            page.wait_for_timeout(500)
            page.screenshot(path=OUT / f"{name}-first.png")
            page.screenshot(path=OUT / f"{name}-full.png", full_page=True)
            if name == "desktop":
                page.locator("#model-heading").scroll_into_view_if_needed()
                page.screenshot(
                    path=OUT / "page.png",
                    clip={
                        "x": 0,
                        "y": page.locator("#model-heading").bounding_box()["y"] - 10 + page.evaluate("scrollY"),
                        "width": 1280,
                        "height": 1000,
                    },
                    full_page=True,
                )
                field = page.get_by_label("W[1][2,1]", exact=True)
                field.fill("1.5")
                field.press("Tab")
                page.locator('body[data-pending="0"]').wait_for(state="attached", timeout=30000)
                page.wait_for_timeout(800)
                page.locator("#layers-heading").scroll_into_view_if_needed()
                page.screenshot(path=OUT / "edit-full.png", full_page=True)
                page.locator("#layers").screenshot(path=OUT / "page-edit.png")
                page.locator("#output-heading").locator("xpath=..").screenshot(path=OUT / "page-edit-output.png")
                page.get_by_role("button", name="Reset").click()
                page.locator('body[data-pending="0"]').wait_for(state="attached", timeout=30000)
                page.get_by_label("CSV rows, one example per row").fill(
                    "0.1, 0.2, 0.3\n-0.1, -0.2, -0.3\n1, 0, -1\n0.5, 0.5, 0.5"
                )
                page.get_by_role("button", name="Ask the server").click()
                page.wait_for_timeout(2500)
                page.locator("#batch-view").screenshot(path=OUT / "page-batch.png")
                page.locator("#activations").screenshot(path=OUT / "page-activations.png")
                unit = page.locator("#landscape-unit")
                unit.select_option(label="ŷ1")
                page.wait_for_timeout(1500)
                page.locator("#landscape").screenshot(path=OUT / "page-landscape.png")
            ctx.close()
        b.close()
finally:
    server.terminate()
    server.wait(10)
print("done")
