"""End to end: ``gpufleet demo`` serves the dashboard, real Chromium visits every page.

Screenshots go to ``$GPUFLEET_SCREENSHOT_DIR`` (default ``out/screenshots``); the README's overview
picture is one of them, committed under ``docs/screenshots`` (made with
``GPUFLEET_E2E_HISTORY_DAYS=7 GPUFLEET_SCREENSHOT_DIR=docs/screenshots pytest tests/test_e2e_browser.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard.navigation import all_pages
from tests.browser import launch, require_playwright, wait_http
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    require_playwright()
    port = free_port()
    folder = tmp_path_factory.mktemp("demo")
    db = folder / "demo.db"
    log = (folder / "demo.log").open("w")
    days = os.environ.get("GPUFLEET_E2E_HISTORY_DAYS", "2")  # 7 for the README's screenshots, as `make demo`
    proc = subprocess.Popen([sys.executable, "-m", "gpufleet", "demo", "--port", str(port), "--history-days", days,
                             "--db", f"sqlite:///{db}", "--duration", "600"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=180)
        except AssertionError:
            raise AssertionError((folder / "demo.log").read_text()[-3000:]) from None
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_every_page_renders_in_chromium(demo: str) -> None:
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("GPUFLEET_SCREENSHOT_DIR", ROOT / "out" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        try:
            for spec in all_pages():
                page.goto(f"{demo}/" if spec.default else f"{demo}/{spec.url_path}", wait_until="domcontentloaded")
                page.wait_for_selector("[data-testid='stSidebarNav']", timeout=60_000)
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=90_000)
                # Let the script finish: Streamlit shows its status widget while a run is going.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and page.locator("[data-testid='stStatusWidget']").count():
                    page.wait_for_timeout(250)
                page.wait_for_timeout(1500)  # plotly draws after the data arrives
                assert page.locator("[data-testid='stException']").count() == 0, spec.title
                assert page.locator(".js-plotly-plot").count() >= 1, spec.title
                body = page.inner_text("body")
                assert "Traceback" not in body, spec.title
                assert "Page not found" not in body, spec.title
                assert spec.title in body
                page.screenshot(path=str(shots / f"{spec.url_path}.png"), full_page=True)
        finally:
            browser.close()
    assert {f"{p.url_path}.png" for p in all_pages()} <= {p.name for p in shots.glob("*.png")}
