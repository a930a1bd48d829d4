"""End to end: ``gpufleet dashboard`` with sign-in against a real OpenID Connect provider
(``oidc-provider-mock``), driven in real Chromium.

An anonymous visitor gets only the sign-in page; a viewer signs in, sees the pages and no action, and
signs out (through the provider's end-session page) back to the sign-in page; an operator (by the e-mail
allow-list) silences an alert from the Alerts page and finds it on the Audit page. The mock's authorize
page asks for a subject (``sub``) and gives the ID token ``email = sub``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.browser import launch, require_playwright, settle, wait_http
from tests.conftest import free_port, missing
from tests.dashboard import seed

VENV_BIN = Path(sys.executable).parent
OPERATOR, VIEWER = "operator@example.com", "viewer@example.com"


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    exe = VENV_BIN / "oidc-provider-mock"
    if not exe.exists():
        missing("oidc-provider-mock is not installed (pip install oidc-provider-mock)")
    port = free_port()
    proc = subprocess.Popen([str(exe), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def dashboard(provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    require_playwright()
    folder = tmp_path_factory.mktemp("oidc")
    url = f"sqlite:///{folder / 'store.db'}"
    engine = seed.seed(url)
    seed.seed_alerting(engine)
    engine.dispose()
    (folder / "client-secret").write_text("not-checked-by-the-mock\n")
    (folder / "cookie-secret").write_text("e2e-cookie-secret-0123456789abcdef-0123456789\n")
    port = free_port()
    log = (folder / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpufleet", "dashboard", "--db", url, "--port", str(port),
         "--oidc-metadata-url", f"{provider}/.well-known/openid-configuration", "--oidc-client-id", "gpufleet",
         "--oidc-client-secret-file", str(folder / "client-secret"),
         "--cookie-secret-file", str(folder / "cookie-secret"), "--operator-emails", OPERATOR],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=60)
        except AssertionError:
            raise AssertionError((folder / "dashboard.log").read_text()[-3000:]) from None
        yield f"http://127.0.0.1:{port}", url
    finally:
        _stop(proc)
        log.close()


def _open(page: Any, url: str) -> str:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid='stAppViewContainer'] h1", timeout=30_000)
    settle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    return str(page.inner_text("body"))


def _sign_in(page: Any, base: str, sub: str) -> None:
    _open(page, base)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("input[name='sub']", timeout=30_000)
    page.fill("input[name='sub']", sub)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_selector("[data-testid='stSidebarNav']", timeout=30_000)
    settle(page)


def _sign_out(page: Any, base: str) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="End session").click(timeout=30_000)  # the provider's end-session page
    page.wait_for_url(f"{base}/**", timeout=30_000)
    assert "Sign in" in _open(page, base)


def test_sign_in_roles_audit_and_sign_out(dashboard: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    base, store = dashboard
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # Anonymous: the sign-in page and nothing else, whichever page is asked for.
            for path in ("", "/audit"):
                body = _open(page, base + path)
                assert page.get_by_role("button", name="Sign in").count() == 1
                assert page.locator("[data-testid='stSidebarNav']").count() == 0
                assert "Silences" not in body and "Fleet utilization" not in body

            # A viewer sees the pages, and no action.
            _sign_in(page, base, VIEWER)
            body = _open(page, f"{base}/alerts")
            assert f"{VIEWER}" in body and "viewer" in body and "Silences" in body
            assert page.get_by_text("Silence alerts, or expire a silence").count() == 0
            assert page.get_by_role("button", name="Silence", exact=True).count() == 0
            _sign_out(page, base)

            # An operator silences an alert; the audit page shows who did it.
            _sign_in(page, base, OPERATOR)
            _open(page, f"{base}/alerts")
            page.get_by_text("Silence alerts, or expire a silence").click()
            page.get_by_label("Matchers").fill("node=node-b alertname=gpu_temperature_high")
            page.get_by_label("Duration").fill("1h")
            page.get_by_label("Comment").fill("swapping fans")
            page.get_by_role("button", name="Silence", exact=True).click()
            page.get_by_text("created for 1h").wait_for(timeout=30_000)
            _open(page, f"{base}/audit")
            # The table draws on a canvas; its cells are also in an off-screen grid for screen readers.
            page.locator("td[role='gridcell']", has_text="silence.create").first.wait_for(state="attached")
            grid = page.locator("[data-testid='stDataFrame']").first.text_content() or ""
            assert OPERATOR in grid and "node=node-b alertname=gpu_temperature_high" in grid
        finally:
            browser.close()

    engine = create_engine(store)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action, outcome FROM audit_log WHERE source = 'dashboard'")).all()
        silences = conn.execute(text("SELECT created_by, comment FROM silences WHERE comment = 'swapping fans'")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(OPERATOR, "silence.create", "ok")]
    assert [tuple(s) for s in silences] == [(OPERATOR, "swapping fans")]
