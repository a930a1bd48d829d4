"""membw on CPU with tiny buffers: copy moves 2·bytes, triad 3·bytes per iteration."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.workloads import membw
from tests.workloads.storecheck import run_and_read

MiB = 1 << 20


def test_traffic_factors() -> None:
    assert membw.bytes_moved("copy", 100) == 200
    assert membw.bytes_moved("triad", 100) == 300
    assert membw.bytes_moved("h2d", 100) == 100


def test_params_on_cpu_and_cuda() -> None:
    assert {p["op"] for p in membw.WORKLOAD.params("quick", "cpu")} == {"copy", "triad"}
    assert {p["op"] for p in membw.WORKLOAD.params("quick", "cuda")} == {"copy", "triad", "h2d", "d2h"}


def test_membw_runs_stores_and_reads_back(sqlite_url: str, tmp_path: Path) -> None:
    params = [{"op": "copy", "bytes": MiB}, {"op": "triad", "bytes": MiB}, {"op": "h2d", "bytes": MiB}]
    records, runs = run_and_read(sqlite_url, "membw", params, tmp_path)
    assert [r["status"] for r in runs] == ["ok", "ok", "skipped"]
    assert "CUDA" in runs[2]["error"]
    for run, factor in zip(runs[:2], (2, 3), strict=True):
        bw, t = run["results"]["bandwidth"], run["results"]["time"]
        assert bw["unit"] == "B/s"
        assert bw["value"] == pytest.approx(factor * MiB / t["median"])
        assert len(t["samples"]) == t["count"]
