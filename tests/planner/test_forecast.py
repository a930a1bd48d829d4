"""Demand forecasting: beats the seasonal-naive baseline on known daily + weekly seasonality, its
intervals cover, capacity answers are exact, and the CLI speaks in one line when input is bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from db.engine import make_engine, upgrade
from planner.demand import SeriesFileError, capacity_on, read_capacity_file, read_series_file
from planner.forecast import (
    Forecast,
    backtest,
    backtest_origins,
    capacity_answer,
    capacity_path,
    fit_forecast,
    seasonal_naive,
    smape,
)
from tests.conftest import SHARED_DATA, missing


def synthetic(weeks: int = 5, noise: float = 6.0, seed: int = 7) -> pd.Series:
    """Hourly demand: 200 GPUs, +40 at the daily peak, −50 on weekends, slow growth, Gaussian noise."""
    idx = pd.date_range("2026-01-05", periods=weeks * 168, freq="h", tz="UTC")  # a Monday
    t = np.arange(len(idx))
    weekend = (idx.day_of_week >= 5).astype(float)
    rng = np.random.default_rng(seed)
    y = 200 + 40 * np.sin(2 * np.pi * (t % 24 - 6) / 24) - 50 * weekend + 0.05 * t + rng.normal(0, noise, len(t))
    return pd.Series(y, index=idx)


def test_smape() -> None:
    assert smape([100, 0], [100, 0]) == 0
    assert smape([100], [50]) == pytest.approx(2 * 50 / 150)
    assert smape([0], [5]) == 2


def test_seasonal_naive_repeats_last_week() -> None:
    y = synthetic(weeks=2)
    fc = seasonal_naive(y, 200)
    assert np.allclose(fc.to_numpy()[:168], y.to_numpy()[-168:])
    assert fc.index[0] == y.index[-1] + pd.Timedelta(hours=1)


def test_model_beats_the_baseline_and_its_intervals_cover() -> None:
    y = synthetic()
    bt = backtest(y, 168, folds=3)
    assert bt.model.startswith("MSTL(24,168)")  # both seasons are real here and get picked
    assert bt.model_smape < bt.baseline_smape * 0.85, bt.folds
    assert bt.coverage >= 0.8, bt.folds
    assert len(bt.folds) == 3 and bt.folds["origin"].is_monotonic_increasing


def test_forecast_follows_the_weekly_shape() -> None:
    y = synthetic(noise=2.0)
    fc = fit_forecast(y, 168)
    weekend = fc.frame.index.day_of_week >= 5
    assert fc.frame["mean"][weekend].mean() < fc.frame["mean"][~weekend].mean() - 35
    assert (fc.frame["lower"] <= fc.frame["mean"]).all() and (fc.frame["mean"] <= fc.frame["upper"]).all()


def test_flat_and_short_series() -> None:
    flat = pd.Series(5.0, index=pd.date_range("2026-01-01", periods=30, freq="h", tz="UTC"))
    fc = fit_forecast(flat, 10)
    assert fc.frame["mean"].tolist() == [5.0] * 10 and fc.model == "last value"
    with pytest.raises(ValueError, match="too short"):
        backtest(flat.iloc[:5], 10)


def test_backtest_origins() -> None:
    assert backtest_origins(744, 168, 3) == [408, 492, 576]
    assert backtest_origins(400, 168, 3) == [232]  # earlier folds would train on under two weeks


def _forecast(upper: list[float], start: str = "2026-02-01") -> Forecast:
    idx = pd.date_range(start, periods=len(upper), freq="D", tz="UTC")
    return Forecast(pd.DataFrame({"mean": upper, "lower": upper, "upper": upper}, index=idx), "test", 0.9)


def test_capacity_answer_date_and_gpus_to_add() -> None:
    fc = _forecast([700, 780, 850, 900])
    usable = capacity_path(fc.frame.index, 1000)
    ans = capacity_answer(fc, usable, target=0.8, per_node=8, model="H100")
    assert ans.exceeds_at == pd.Timestamp("2026-02-03", tz="UTC")  # 850 > 800
    assert ans.add == 128  # 900 / 0.8 = 1125 GPUs needed: 125 more, 16 nodes of 8
    assert "on 2026-02-03" in ans.sentence() and "add 128 GPUs of model H100" in ans.sentence()
    assert "p95" in ans.sentence()
    calm = capacity_answer(_forecast([100, 120]), capacity_path(fc.frame.index[:2], 1000), target=0.8)
    assert calm.exceeds_at is None and calm.add == 0 and "nothing to add" in calm.sentence()


def test_planned_capacity_and_down_gpus_step_the_threshold() -> None:
    fc = _forecast([700, 780, 850, 900])
    usable = capacity_path(fc.frame.index, 1000, planned=[(pd.Timestamp("2026-02-03", tz="UTC"), 1200)],
                           unavailable=40)
    assert usable.tolist() == [960, 960, 1160, 1160]
    ans = capacity_answer(fc, usable, target=0.8)
    assert ans.exceeds_at == pd.Timestamp("2026-02-02", tz="UTC")  # 780 > 960 * 0.8 = 768
    assert ans.add == 16  # worst gap: 780 / 0.8 - 960 = 15 GPUs (900 / 0.8 - 1160 < 0), two nodes of 8
    assert capacity_answer(fc, usable, target=0.8, per_node=1).add == 15


# -- series files -------------------------------------------------------------------------------


def write_helios(path: Path, hours: int = 72) -> None:
    idx = pd.date_range("2020-05-01", periods=hours * 60, freq="min")
    t = np.arange(len(idx))
    running = (40 + 10 * np.sin(2 * np.pi * t / 1440)).round()
    pending = np.where(t % 1440 < 600, 12, 0)
    pd.DataFrame({"time": idx.strftime("%Y-%m-%d %H:%M:%S"), "total_job_num": 1, "running_gpu_num": running,
                  "pending_gpu_num": pending, "total_gpu_num": 64}).to_csv(path, index=False)


def test_read_helios_series_and_capacity_file(tmp_path: Path) -> None:
    path = tmp_path / "vcAbc_cluster_sequence_vc.csv"
    write_helios(path)
    usage = read_series_file(path)
    assert usage.name == "vcAbc" and usage.unit == "GPUs" and len(usage.frame) == 72
    first = usage.frame.iloc[0]
    assert first["pending"] == 12 and first["demand"] == pytest.approx(first["running"] + 12)
    cap = tmp_path / "gpu_number.csv"
    cap.write_text("date,vcAbc,total\n2020-04-30,64,100\n2020-05-02,96,132\n")
    steps = capacity_on(usage.frame.index, read_capacity_file(cap, "vcAbc"))
    assert steps.iloc[0] == 64 and steps.iloc[-1] == 96
    with pytest.raises(SeriesFileError, match="no column 'vcX'"):
        read_capacity_file(cap, "vcX")


def test_series_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("time,demand\n2020-01-01 00:00,5\n2020-01-01 01:00,lots\n")
    with pytest.raises(SeriesFileError, match="line 3: demand 'lots' is not a number"):
        read_series_file(bad)
    bad.write_text("when,what\n1,2\n")
    with pytest.raises(SeriesFileError, match="unknown series format"):
        read_series_file(bad)


def test_real_helios_vc_series_reads() -> None:
    path = SHARED_DATA / "helios" / "earth" / "vc_sequences" / "vc6YE_cluster_sequence_vc.csv.gz"
    if not path.exists():
        missing(f"shared data not found: {path}")
    usage = read_series_file(path)
    assert len(usage.frame) == 744 and usage.frame["capacity"].max() == 208
    assert (usage.frame["demand"] >= usage.frame["running"]).all()


# -- CLI ----------------------------------------------------------------------------------------


def gpufleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpufleet", "plan", "forecast", *args], capture_output=True,
                          text=True, timeout=180)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("gpufleet: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_cli_series_answer_and_json(tmp_path: Path) -> None:
    path = tmp_path / "vcAbc_cluster_sequence_vc.csv"
    write_helios(path)
    text = gpufleet("--series", str(path), "--backtest-days", "1", "--horizon-days", "2", "--gpu-model", "V100")
    assert text.returncode == 0, text.stderr
    assert "answer:   p95 demand" in text.stdout and "sMAPE" in text.stdout and "mean" in text.stdout
    doc = json.loads(gpufleet("--series", str(path), "--backtest-days", "1", "--horizon-days", "2",
                              "--capacity", "40", "--json").stdout)
    assert doc["capacity_latest"] == 40 and doc["exceeds_at"] is not None and doc["add"] % 8 == 0
    assert len(doc["forecast"]) == 48 and doc["backtest"]["folds"]


def test_cli_store_forecast_from_jobs(tmp_path: Path) -> None:
    rows = ["job_id,submit_time,gpus,start_time,end_time"]
    for i in range(120):  # a job an hour for five days, each holding 8 GPUs for 3 hours
        t = 1767225600 + i * 3600
        rows.append(f"j{i},{t},8,{t + 600},{t + 3 * 3600}")
    (tmp_path / "jobs.csv").write_text("\n".join(rows) + "\n")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    imp = subprocess.run([sys.executable, "-m", "gpufleet", "import", "jobs", str(tmp_path / "jobs.csv"), "--format",
                          "csv", "--db", db], capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    assert "no capacity known" in one_error_line(gpufleet("--db", db))
    last_submit = str(1767225600 + 119 * 3600)  # the history stops before the trace drains
    ok = gpufleet("--db", db, "--capacity", "16", "--backtest-days", "1", "--horizon-days", "1", "--end", last_submit)
    assert ok.returncode == 0, ok.stderr
    assert "running + pending GPUs of the jobs table" in ok.stdout and "exceeds" in ok.stdout


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    assert "no such file" in one_error_line(gpufleet("--series", str(tmp_path / "none.csv")))
    assert "--target" in one_error_line(gpufleet("--series", str(tmp_path / "none.csv"), "--target", "1.5"))
    assert "DATE=GPUS" in one_error_line(gpufleet("--series", "x", "--planned", "soon"))
    short = tmp_path / "short.csv"
    short.write_text("time,demand\n2020-01-01 00:00,5\n2020-01-01 01:00,6\n")
    assert "at least 48" in one_error_line(gpufleet("--series", str(short)))
    empty = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(make_engine(empty))
    assert "no jobs and no GPU telemetry" in one_error_line(gpufleet("--db", empty))


def test_backtest_needs_two_days_before_each_fold() -> None:
    """A week of history and a week-long horizon leaves nothing to fit on: a clear error, not a crash
    (the Capacity page then says why there is no backtest)."""
    from planner.forecast import backtest, backtest_origins

    assert backtest_origins(169, 168, 3) == []
    assert backtest_origins(169, 24, 3) == [145]
    y = pd.Series(np.arange(169, dtype=float), index=pd.date_range("2026-01-01", periods=169, freq="h"))
    with pytest.raises(ValueError, match="too short to backtest"):
        backtest(y, 168)
