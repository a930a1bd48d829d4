"""The command line ``gpufleet dashboard`` runs, and the navigation every page hangs on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dashboard import navigation, server
from db.engine import StoreError


def test_command_is_headless_on_the_installed_app() -> None:
    cmd = server.command("sqlite:////tmp/x.db", 8599, "0.0.0.0")
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    app = Path(cmd[4])
    assert app.is_file() and app.name == "app.py" and app.parent.name == "dashboard"
    opts = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert opts == {"--server.headless": "true", "--server.port": "8599", "--server.address": "0.0.0.0",
                    "--browser.gatherUsageStats": "false"}
    assert not any("sqlite" in part for part in cmd)  # the URL (and any password) travels in the environment


def test_environment_carries_the_store() -> None:
    env = server.environment("postgresql+psycopg://u:secret@h/db", {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GPUFLEET_DB_URL": "postgresql+psycopg://u:secret@h/db"}
    assert server.environment(None, {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_bad_url_fails_before_streamlit_starts() -> None:
    with pytest.raises(StoreError):
        server.command("mysql://x@y/z", 8501, "127.0.0.1")


def test_every_page_module_exists_once() -> None:
    pages = navigation.all_pages()
    assert all((navigation.HERE / p.path).is_file() for p in pages)
    assert len({p.url_path for p in pages}) == len(pages) and sum(p.default for p in pages) == 1
    assert [p.route for p in pages if p.default] == [""]  # Streamlit serves the default page at the root


def test_stopping_gpufleet_dashboard_stops_the_streamlit_server(tmp_path: Path) -> None:
    """A service manager (or a test) sends SIGTERM to ``gpufleet dashboard``: the Streamlit child
    must go with it, not keep serving."""
    import signal
    import subprocess
    import time

    import psutil

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpufleet", "dashboard", "--db", f"sqlite:///{tmp_path / 's.db'}",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and not children:
            children = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.2)
        assert children, "the Streamlit server did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
