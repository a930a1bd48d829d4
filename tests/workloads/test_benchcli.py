"""``gpufleet bench list | run``: the table, --json, the store, one-line errors."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from db.engine import make_engine
from db.models import BenchResult, BenchRun
from gpufleet import benchcli
from gpufleet.cli import main


def test_list_names_every_workload_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[:2] == ["gemm", "membw"] and "allreduce" in names and "storage" in names
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines)


def test_unknown_workload_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    assert main(["bench", "run", "--workload", "nope", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gpufleet: error: unknown workload 'nope' (known: " + ", ".join(
        __import__("agent.workloads", fromlist=["names"]).names()) + ")"]


def test_no_cuda_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "run", "--device", "cuda", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpufleet: error: --device cuda: torch sees no CUDA device")


def test_run_prints_a_table_and_stores_the_runs(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    assert main(["bench", "run", "--workload", "storage", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(benchcli.HEAD)
    rows = [line for line in out[1:] if line.startswith("storage")]
    assert len(rows) == 4 * 3  # four operations x (throughput, iops, time)
    assert any(" iops " in r and "ops/s" in r for r in rows)
    assert out[-1].startswith("stored 4 runs")
    with make_engine(sqlite_url).connect() as conn:
        runs = conn.execute(select(BenchRun.workload, BenchRun.status, BenchRun.environment)).all()
        results = conn.execute(select(BenchResult.metric)).scalars().all()
    assert [r.workload for r in runs] == ["storage"] * 4 and {r.status for r in runs} == {"ok"}
    assert all(r.environment["torch"] and r.environment["cpu_model"] for r in runs)
    assert results.count("iops") == 4


def test_json_is_machine_readable(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    assert main(["bench", "run", "--workload", "storage", "--db", sqlite_url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["suite"] == "quick" and doc["device"] == "cpu" and len(doc["runs"]) == 4
    run = doc["runs"][0]
    assert run["workload"] == "storage" and run["status"] == "ok" and run["run_id"] is not None
    metrics = {m["metric"]: m for m in run["metrics"]}
    assert metrics["throughput"]["unit"] == "B/s" and metrics["time"]["samples"]
    assert run["environment"]["telemetry"]["samples"] >= 2


def test_table_scales_units_and_reports_failures_and_notes() -> None:
    runs = [
        {"workload": "membw", "params": {"op": "copy", "bytes": 1 << 26}, "status": "ok", "error": None,
         "notes": ["GPU 0 throttled in 50% of samples (sw_power_cap)"], "run_id": 7,
         "metrics": [{"metric": "bandwidth", "unit": "B/s", "value": 7.25e9, "median": 7.25e9, "p90": 6.5e9,
                      "cv": 0.021, "count": 12}]},
        {"workload": "gemm", "params": {"dtype": "fp32"}, "status": "failed", "error": "RuntimeError: boom",
         "notes": [], "run_id": 8, "metrics": []},
    ]
    buf = io.StringIO()
    benchcli.print_table(runs, buf)
    lines = buf.getvalue().splitlines()
    assert lines[1].split() == ["membw", "op=copy", "bytes=64Mi", "bandwidth", "7.25", "GB/s", "7.25", "6.5",
                                "2.1%", "12"]
    assert lines[2].split()[:5] == ["gemm", "dtype=fp32", "-", "failed", "-"]
    assert "failed: gemm dtype=fp32: RuntimeError: boom" in lines
    assert "note: membw op=copy bytes=64Mi: GPU 0 throttled in 50% of samples (sw_power_cap)" in lines
    assert benchcli.scaled(0.0025, "s")[:2] == (2.5, "ms")
    assert benchcli.scaled(1.5, "TFLOP/s")[:2] == (1.5, "TFLOP/s")


def test_progress_bar_overwrites_one_line() -> None:
    buf = io.StringIO()
    bar = benchcli.ProgressBar(buf, width=10)
    bar.update(5, 10, "gemm dtype=fp32")
    assert buf.getvalue().endswith("[#####.....] 5/10 gemm dtype=fp32") and "\n" not in buf.getvalue()


def test_gpu_check_table_reads_the_suite_json_and_an_nvml_collection(
        capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    """bench/cuda_check.py's summary rows, fed what gpu_check.sh feeds it (the fake NVML stands in)."""
    from bench import cuda_check

    assert main(["agent", "run", "--once", "--simulate", "thermal", "--metrics-addr", ""]) == 0
    rows, ok = cuda_check.nvml_rows(json.loads(capsys.readouterr().out))
    assert ok and len(rows) == 8 and rows[0][0] == "nvml: GPU 0" and "H100" in rows[0][1]
    assert main(["bench", "run", "--workload", "storage", "--db", sqlite_url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    doc["runs"][0]["status"] = "failed"
    rows, ok = cuda_check.suite_rows(doc)
    assert not ok and rows[0][0] == "suite: storage" and rows[0][3] == "3 ok, 1 failed, 0 skipped"
    assert rows[0][1].endswith("B/s (throughput)")
