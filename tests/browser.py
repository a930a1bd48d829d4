"""What the browser tests share: Chromium's flags (DESIGN.md), waiting for a server, launching the
system Chromium through playwright, and waiting for a Streamlit run to finish."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from tests.conftest import binary, missing

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def wait_http(url: str, timeout: float) -> None:
    """Until ``url`` answers 200, or AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def require_playwright() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("playwright is not installed")
    binary("chromium")


def launch(pw: Any) -> Any:
    """The system Chromium (``playwright install`` cannot download one here)."""
    return pw.chromium.launch(executable_path=binary("chromium"), args=CHROMIUM_ARGS)


def settle(page: Any, timeout: float = 60) -> None:
    """Wait until Streamlit has finished the current run (its status widget shows while a run goes on)."""
    deadline = time.monotonic() + timeout
    page.wait_for_timeout(300)
    while time.monotonic() < deadline and page.locator("[data-testid='stStatusWidget']").count():
        page.wait_for_timeout(200)
