"""How ``gpufleet dashboard`` starts Streamlit: the command line, and the environment that carries
the store URL (kept out of the command line so that a password does not show in ``ps``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from db.engine import parse_url

DB_ENV = "GPUFLEET_DB_URL"


def app_path() -> Path:
    """``dashboard/app.py`` of the installed package."""
    return Path(str(resources.files("dashboard").joinpath("app.py")))


def command(db_url: str | None, port: int, address: str, secrets_files: Sequence[Path] = ()) -> list[str]:
    """The ``streamlit run`` command line for the dashboard, headless and without usage stats.

    ``db_url`` is checked here (a bad URL fails with ``db.engine.StoreError`` before Streamlit
    starts) but travels in the environment: see ``environment``. ``secrets_files``: the secrets.toml
    files Streamlit reads, in order, instead of its default places (sign-in and roles, ``dashboard.access``)."""
    if db_url:
        parse_url(db_url)
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.headless", "true", "--server.port", str(int(port)), "--server.address", address,
            "--browser.gatherUsageStats", "false", *(a for f in secrets_files for a in ("--secrets.files", str(f)))]


def environment(db_url: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``command``: ``base`` (default: this process's) with the store URL."""
    env = dict(os.environ if base is None else base)
    if db_url:
        env[DB_ENV] = db_url
    return env
