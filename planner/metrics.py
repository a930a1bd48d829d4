"""Fleet metrics over a time range: allocation, utilization, efficiency, idle-held GPU-hours, queueing
delay and job completion time, and failures by category by count and by GPU-hours lost.

Pure functions over plain rows and DataFrames (the dashboard and the recommendations call them
directly), plus ``fleet_hours`` and ``job_metrics``, thin loaders over the store. Definitions, all in
GPU-hours over the range:

- total = GPUs in the inventory × hours; down = hours a GPU reported an error or reported nothing;
- allocated = hours a GPU held work (busy, or holding a process while idle), or job GPU-hours;
- used = Σ utilization × hours (a GPU at 50% for an hour is half a GPU-hour used);
- **allocation rate** = allocated / (total − down); **utilization** = used / (total − down);
  **efficiency** = used / allocated; **idle-held** = allocated with utilization under 5%.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from db.readmodels import Scope, gpu_state_hours, inventory

PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; ``None`` (unknown) when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def allocation_rate(allocated_gpu_hours: float, total_gpu_hours: float, down_gpu_hours: float) -> float | None:
    """Allocated / (total − down) GPU-hours: how much of the working fleet held jobs."""
    return ratio(allocated_gpu_hours, total_gpu_hours - down_gpu_hours)


def efficiency(used_gpu_hours: float, allocated_gpu_hours: float) -> float | None:
    """Used / allocated GPU-hours: how much of what jobs held they actually used."""
    return ratio(used_gpu_hours, allocated_gpu_hours)


@dataclass(frozen=True, slots=True)
class FleetHours:
    """GPU-hours of a range, split as the module docstring defines; ratios are ``None`` when unknown."""

    total: float
    down: float
    allocated: float
    used: float
    idle_held: float

    @property
    def available(self) -> float:
        return self.total - self.down

    @property
    def allocation_rate(self) -> float | None:
        return allocation_rate(self.allocated, self.total, self.down)

    @property
    def utilization(self) -> float | None:
        return ratio(self.used, self.available)

    @property
    def efficiency(self) -> float | None:
        return efficiency(self.used, self.allocated)


def fleet_hours_from_state_hours(rows: Iterable[Mapping[str, Any]], inventory_gpus: int,
                                 range_seconds: float) -> FleetHours:
    """``FleetHours`` from per-GPU state hours (``db.readmodels.gpu_state_hours`` rows: ``reported_hours``,
    ``busy_hours``, ``idle_allocated_hours``, ``down_hours``, ``utilization``). GPUs of the
    inventory that reported nothing count as down for the whole range."""
    total = inventory_gpus * range_seconds / 3600.0
    reported = down = busy = idle_held = used = 0.0
    for r in rows:
        hours = float(r.get("reported_hours") or 0.0)
        reported += hours
        down += float(r.get("down_hours") or 0.0)
        busy += float(r.get("busy_hours") or 0.0)
        idle_held += float(r.get("idle_allocated_hours") or 0.0)
        up = hours - float(r.get("down_hours") or 0.0)
        used += float(r.get("utilization") or 0.0) * up
    down += max(total - reported, 0.0)
    return FleetHours(total=total, down=min(down, total), allocated=busy + idle_held, used=used, idle_held=idle_held)


def fleet_hours(engine: Engine, start: float, end: float, scope: Scope = Scope()) -> FleetHours:
    """``FleetHours`` of the GPUs in ``scope`` over [start, end), from telemetry."""
    gpus = len(inventory(engine, scope))
    return fleet_hours_from_state_hours(gpu_state_hours(engine, scope, start, end), gpus, end - start)


# -- jobs -----------------------------------------------------------------------------------------


def job_gpu_hours(jobs: pd.DataFrame, start: float | None = None, end: float | None = None) -> pd.Series:
    """GPU-hours each job ran (start to end, clipped to [start, end) when given); jobs that never
    started count 0, jobs still running run until ``end``."""
    lo = jobs["start_ts"].astype(float)
    hi = jobs["end_ts"].astype(float)
    if end is not None:
        hi = hi.fillna(end).clip(upper=end)
    if start is not None:
        lo = lo.clip(lower=start)
    seconds = (hi - lo).clip(lower=0).fillna(0.0)
    return jobs["gpus"].astype(float).fillna(0.0) * seconds / 3600.0


def percentiles(values: Sequence[float] | np.ndarray | pd.Series,
                qs: Sequence[float] = PERCENTILES) -> dict[str, float | None]:
    """``{"p50": …, "p90": …}`` of the finite values (linear interpolation); ``None`` when empty."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return {f"p{round(q * 100)}": (float(np.quantile(arr, q)) if arr.size else None) for q in qs}


def queue_delays(jobs: pd.DataFrame) -> pd.Series:
    """Seconds each started job waited between submit and start."""
    waited = jobs["start_ts"].astype(float) - jobs["submit_ts"].astype(float)
    return waited.dropna().clip(lower=0)


def completion_times(jobs: pd.DataFrame) -> pd.Series:
    """Job completion time (JCT): seconds from submit to end, queueing included, of ended jobs."""
    jct = jobs["end_ts"].astype(float) - jobs["submit_ts"].astype(float)
    return jct.dropna().clip(lower=0)


def failures_by_category(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per failure category: ``jobs`` (count), ``gpu_hours_lost`` (GPU-hours the failed jobs ran,
    all of it lost), and each one's share of the failed total (``job_share``, ``gpu_hours_share``).
    Sorted by GPU-hours lost: the two rankings usually differ, so show both."""
    failed = jobs[jobs["category"].notna()]
    if failed.empty:
        return pd.DataFrame(columns=["category", "jobs", "gpu_hours_lost", "job_share", "gpu_hours_share"])
    frame = (pd.DataFrame({"category": failed["category"], "gpu_hours_lost": job_gpu_hours(failed)})
             .groupby("category").agg(jobs=("gpu_hours_lost", "size"), gpu_hours_lost=("gpu_hours_lost", "sum"))
             .reset_index())
    frame["job_share"] = frame["jobs"] / frame["jobs"].sum()
    total = frame["gpu_hours_lost"].sum()
    frame["gpu_hours_share"] = frame["gpu_hours_lost"] / total if total > 0 else np.nan
    return frame.sort_values(["gpu_hours_lost", "jobs"], ascending=False, ignore_index=True)


@dataclass(frozen=True)
class JobMetrics:
    """What a job log says about a range: GPU-hours allocated, queueing delay and JCT percentiles
    (seconds), and failures by category."""

    jobs: int
    allocated_gpu_hours: float
    queue_delay: dict[str, float | None]
    completion_time: dict[str, float | None]
    failures: pd.DataFrame


def job_metrics_from_frame(jobs: pd.DataFrame, start: float, end: float) -> JobMetrics:
    """``JobMetrics`` over jobs alive in [start, end); delays and JCTs of jobs submitted in it."""
    submitted = jobs[(jobs["submit_ts"] >= start) & (jobs["submit_ts"] < end)]
    ended = jobs[(jobs["end_ts"] >= start) & (jobs["end_ts"] < end)]
    return JobMetrics(jobs=len(jobs), allocated_gpu_hours=float(job_gpu_hours(jobs, start, end).sum()),
                      queue_delay=percentiles(queue_delays(submitted)),
                      completion_time=percentiles(completion_times(submitted[submitted["end_ts"].notna()])),
                      failures=failures_by_category(ended))


def job_metrics(engine: Engine, start: float, end: float, *, cluster: str | None = None) -> JobMetrics:
    """``JobMetrics`` of the stored jobs over [start, end)."""
    from planner.jobs import load_jobs

    return job_metrics_from_frame(load_jobs(engine, start, end, cluster=cluster), start, end)
