"""Stores for the dashboard tests: one seeded store shared by the module's tests, an empty one,
and the environment that points the app at a store with its clock pinned to the seed's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dashboard import seed

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture(scope="session")
def seeded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'seeded.db'}"
    seed.seed(url).dispose()
    return url


@pytest.fixture
def empty_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    seed.empty(url).dispose()
    return url


@pytest.fixture
def use_store(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point the dashboard at a store (``GPUFLEET_DB_URL``) with its clock at ``seed.NOW``."""
    def use(url: str) -> None:
        monkeypatch.setenv("GPUFLEET_DB_URL", url)
        monkeypatch.setenv("GPUFLEET_DASHBOARD_NOW", str(seed.NOW))
    return use
