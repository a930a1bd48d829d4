"""gemm on CPU with tiny sizes: TFLOP/s is 2·M·N·K over the median time, stored and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.workloads import dtypes, gemm
from tests.workloads.storecheck import run_and_read


def test_flop_count() -> None:
    assert gemm.flops(2, 3, 4) == 48.0


def test_params_sweep_sizes_per_dtype() -> None:
    params = gemm.WORKLOAD.params("quick", "cpu")
    assert {p["dtype"] for p in params} == set(dtypes.supported("cpu"))
    assert "fp32" in dtypes.supported("cpu") and "fp16" not in dtypes.supported("cpu")
    sizes = [p["m"] for p in params if p["dtype"] == "fp32"]
    assert sizes == sorted(sizes) and len(sizes) >= 2
    assert len(gemm.WORKLOAD.params("standard", "cpu")) > len(params)


def test_gemm_runs_stores_and_reads_back(sqlite_url: str, tmp_path: Path) -> None:
    params = [{"dtype": "fp32", "m": 32, "n": 48, "k": 16}, {"dtype": "bf16", "m": 32, "n": 32, "k": 32}]
    records, runs = run_and_read(sqlite_url, "gemm", params, tmp_path)
    assert [r.result.status for r in records] == ["ok", "ok"]
    first = runs[0]
    assert first["workload"] == "gemm" and first["status"] == "ok" and first["config"] == params[0]
    tflops, t = first["results"]["tflops"], first["results"]["time"]
    assert tflops["unit"] == "TFLOP/s" and t["unit"] == "s"
    assert tflops["value"] == pytest.approx(2 * 32 * 48 * 16 / t["median"] / 1e12)
    assert len(t["samples"]) == t["count"] >= 5  # raw per-iteration samples
    env = first["environment"]
    assert env["dtype"] == "fp32" and runs[1]["environment"]["dtype"] == "bf16"
    assert env["torch"] and env["cpu_model"] and env["threads"] >= 1 and env["device"] == "cpu"
