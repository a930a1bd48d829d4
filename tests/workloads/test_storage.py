"""storage on a temporary path with a tiny file: throughput and IOPS, fsync'd, cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.workloads import storage
from tests.workloads.storecheck import run_and_read

KiB = 1 << 10


def test_params_cover_sequential_and_random_reads_and_writes() -> None:
    params = storage.WORKLOAD.params("quick", "cpu")
    assert [p["op"] for p in params] == ["seq_write", "seq_read", "rand_write", "rand_read"]
    assert all(p["ops"] * p["block"] <= p["bytes"] for p in params if p["op"].startswith("seq"))
    assert {p["block"] for p in params if p["op"].startswith("rand")} == {4 * KiB}


def test_storage_runs_stores_reads_back_and_cleans_up(sqlite_url: str, tmp_path: Path) -> None:
    params = [{"op": op, "bytes": 256 * KiB, "block": 4 * KiB, "ops": 16} for op in storage.OPS]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    records, runs = run_and_read(sqlite_url, "storage", params, scratch)
    assert [r["status"] for r in runs] == ["ok"] * 4, [r.result.error for r in records]
    for run in runs:
        res = run["results"]
        assert res["iops"]["unit"] == "ops/s" and res["throughput"]["unit"] == "B/s"
        assert res["iops"]["value"] == pytest.approx(16 / res["time"]["median"])
        assert res["throughput"]["value"] == pytest.approx(16 * 4 * KiB / res["time"]["median"])
    assert list(scratch.iterdir()) == []  # the runner's scratch folder and the workload's files are gone


def test_unknown_op_fails_the_run_not_the_suite(sqlite_url: str, tmp_path: Path) -> None:
    params = [{"op": "erase", "bytes": 4 * KiB, "block": 4 * KiB, "ops": 1},
              {"op": "seq_write", "bytes": 8 * KiB, "block": 4 * KiB, "ops": 2}]
    _, runs = run_and_read(sqlite_url, "storage", params, tmp_path)
    assert [r["status"] for r in runs] == ["failed", "ok"]
    assert "unknown storage op" in runs[0]["error"] and runs[0]["results"] == {}
