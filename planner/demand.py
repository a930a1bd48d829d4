"""Demand and capacity as time series: from jobs, from GPU telemetry, or from a series file.

Demand is what users asked for — GPUs of running plus pending jobs — not what happened to be
allocated: a full cluster's allocation is flat at capacity while its queue grows. Every source
comes out as a *usage frame*: a UTC ``DatetimeIndex`` of bucket starts and the columns ``demand``,
``running``, ``pending`` and ``capacity`` (NaN where the source does not say), as time-weighted
means over each bucket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, case, func, literal_column, select

from db.models import Gpu, GpuRollup1h, GpuRollup1m, HealthState
from db.rollups import IDLE_UTILIZATION

HOUR = 3600
USAGE_COLUMNS = ("demand", "running", "pending", "capacity")


class SeriesFileError(ValueError):
    """A series or capacity file that cannot be read; the message is one line."""


@dataclass(frozen=True)
class UsageSeries:
    """A usage frame with what it measures: ``unit`` (GPUs or nodes) and the definition of demand."""

    name: str
    unit: str
    definition: str
    frame: pd.DataFrame


def step_average(times: np.ndarray, deltas: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean over each ``[edges[i], edges[i+1])`` of the step function that changes by
    ``deltas[j]`` at ``times[j]`` (zero before the first change)."""
    order = np.argsort(times, kind="stable")
    t, d = times[order], deltas[order]
    level = np.cumsum(d)  # value from t[j] on
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(t))]) if len(t) else np.zeros(0)

    def integral(x: np.ndarray) -> np.ndarray:  # integral of the step function from -inf to x
        if not len(t):
            return np.zeros(len(x))
        j = np.searchsorted(t, x, side="right") - 1
        inside = j >= 0
        out = np.zeros(len(x))
        out[inside] = area[j[inside]] + level[j[inside]] * (x[inside] - t[j[inside]])
        return out

    cum = integral(edges.astype(float))
    return np.diff(cum) / np.diff(edges.astype(float))


def bucket_edges(start: float, end: float, step: int = HOUR) -> np.ndarray:
    """Bucket boundaries aligned to ``step`` covering [start, end)."""
    lo = np.floor(start / step) * step
    hi = np.ceil(end / step) * step
    return np.arange(lo, max(hi, lo + step) + step / 2, step, dtype=float)


def _index(edges: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(edges[:-1], unit="s", utc=True))


def demand_from_jobs(jobs: pd.DataFrame, start: float, end: float, *, step: int = HOUR,
                     now: float | None = None) -> pd.DataFrame:
    """Running and pending GPUs per bucket from job rows (``submit_ts``, ``start_ts``, ``end_ts``,
    ``gpus``). A job is pending from submit to start (or to its end if it never started), running
    from start to end; a job with no end is alive until ``now`` (default ``end``)."""
    edges = bucket_edges(start, end, step)
    horizon = end if now is None else now
    j = jobs[jobs["submit_ts"].notna() | jobs["start_ts"].notna()]
    gpus = j["gpus"].fillna(0.0).to_numpy(float)
    submit = j["submit_ts"].fillna(j["start_ts"]).to_numpy(float)
    started = j["start_ts"].to_numpy(float)
    finish = j["end_ts"].fillna(horizon).to_numpy(float)
    has_start = ~np.isnan(started)
    pend_end = np.where(has_start, np.minimum(started, finish), finish)
    run_lo, run_hi = started[has_start], np.maximum(finish[has_start], started[has_start])
    pending = step_average(np.concatenate([submit, pend_end]), np.concatenate([gpus, -gpus]), edges)
    g = gpus[has_start]
    running = step_average(np.concatenate([run_lo, run_hi]), np.concatenate([g, -g]), edges)
    frame = pd.DataFrame({"running": running, "pending": pending}, index=_index(edges))
    frame["demand"] = frame["running"] + frame["pending"]
    frame["capacity"] = np.nan
    return frame[list(USAGE_COLUMNS)]


def demand_by_group(jobs: pd.DataFrame, start: float, end: float, *, key: str = "partition",
                    step: int = HOUR) -> dict[str, pd.DataFrame]:
    """``demand_from_jobs`` per value of ``key`` (``partition``: the VC; ``account``: the team)."""
    return {str(name): demand_from_jobs(group, start, end, step=step)
            for name, group in jobs.groupby(jobs[key].fillna("(none)"))}


# -- telemetry ----------------------------------------------------------------------------------


def telemetry_usage(engine: Engine, start: float, end: float) -> pd.DataFrame:
    """Hourly allocated GPUs and reporting GPUs from the GPU rollups (1-hour, else 1-minute).

    With telemetry only, demand is the GPUs *allocated*: busy (utilization ≥ 5%) or holding a
    process while idle. Pending work is invisible to NVML, so this is a lower bound of demand.
    ``capacity`` is the GPUs up in the hour (reporting, weighted by their share of ok samples).
    """
    for table, seconds in ((GpuRollup1h, 3600), (GpuRollup1m, 60)):
        ok = table.ok_samples * 1.0 / table.samples
        share = case((table.utilization_avg >= IDLE_UTILIZATION, ok),
                     else_=ok * func.coalesce(table.idle_allocated_ratio, 0.0))
        hour = func.floor(table.ts / literal_column("3600")) * literal_column("3600")
        weight: Any = literal_column(str(seconds / 3600))
        q = (select(hour.label("ts"), (func.sum(share) * weight).label("allocated"),
                    (func.sum(ok) * weight).label("up"))
             .where(table.ts >= start, table.ts < end, table.samples > 0).group_by(hour).order_by(hour))
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if rows:
            frame = pd.DataFrame(rows, columns=["ts", "allocated", "up"]).astype(float)
            frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("ts"), unit="s", utc=True))
            return pd.DataFrame({"demand": frame["allocated"], "running": frame["allocated"], "pending": np.nan,
                                 "capacity": frame["up"]})
    return pd.DataFrame(columns=list(USAGE_COLUMNS), index=pd.DatetimeIndex([], tz="UTC"), dtype=float)


def unhealthy_gpus(engine: Engine) -> int:
    """GPUs the controller last judged unhealthy: capacity that cannot take work now."""
    q = select(func.count()).select_from(HealthState).where(HealthState.entity == "gpu",
                                                            HealthState.state == "unhealthy")
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def fleet_gpu_model(engine: Engine) -> str | None:
    """The fleet's most common GPU model (what an addition would most likely be)."""
    q = (select(Gpu.model).where(Gpu.model.is_not(None)).group_by(Gpu.model)
         .order_by(func.count().desc(), Gpu.model).limit(1))
    with engine.connect() as conn:
        return conn.execute(q).scalar_one_or_none()


# -- series files -------------------------------------------------------------------------------

HELIOS_COLUMNS = ("time", "running_gpu_num", "pending_gpu_num", "total_gpu_num")
PHILLY_COLUMNS = ("time", "active", "total")
PLAIN_COLUMNS = ("time", "demand")


def _read_csv(path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError as exc:
        raise SeriesFileError(f"cannot read {path}: no such file") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SeriesFileError(f"cannot read {path} as CSV: {str(exc).splitlines()[0]}") from exc


def _times(values: pd.Series, path: str | Path) -> pd.DatetimeIndex:
    numeric = pd.to_numeric(values, errors="coerce")
    try:
        if numeric.notna().all():
            return pd.DatetimeIndex(pd.to_datetime(numeric, unit="s", utc=True))
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
    except (ValueError, TypeError) as exc:
        bad = next((i for i, v in enumerate(values) if pd.isna(pd.to_datetime(v, errors="coerce", utc=True))), 0)
        raise SeriesFileError(f"{path}: line {bad + 2}: time {values.iloc[bad]!r} is not a time") from exc


def _numbers(frame: pd.DataFrame, columns: Sequence[str], path: str | Path) -> pd.DataFrame:
    out = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    bad = out.isna() & frame[list(columns)].notna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise SeriesFileError(f"{path}: line {row + 2}: {columns[col]} {frame[columns[col]].iloc[row]!r} "
                              "is not a number")
    return out


def series_name(path: str | Path) -> str:
    """``vc6YE`` from ``vc6YE_cluster_sequence_vc.csv.gz``; else the file name without suffixes."""
    base = Path(path).name
    return re.sub(r"(_cluster_sequence_vc)?(\.csv)?(\.gz)?$", "", base)


def read_series_file(path: str | Path, *, resample: str | None = "1h") -> UsageSeries:
    """A demand series file, recognised by its header:

    - Helios VC sequence (``time, running_gpu_num, pending_gpu_num, total_gpu_num``): demand =
      running + pending GPUs; capacity = the VC's GPUs.
    - Philly node sequence (``time, active, total``): demand = active nodes (the trace has no
      queue, so this is allocation, a lower bound); capacity = total nodes.
    - plain (``time, demand`` and optionally ``running, pending, capacity``), in GPUs.

    Values are averaged into ``resample`` buckets (``None`` keeps the file's own rows).
    """
    raw = _read_csv(path)
    cols = set(raw.columns)
    if set(HELIOS_COLUMNS) <= cols:
        nums = _numbers(raw, HELIOS_COLUMNS[1:], path)
        frame = pd.DataFrame({"running": nums["running_gpu_num"], "pending": nums["pending_gpu_num"],
                              "capacity": nums["total_gpu_num"]})
        unit, definition = "GPUs", "running + pending GPUs"
    elif set(PHILLY_COLUMNS) <= cols:
        nums = _numbers(raw, PHILLY_COLUMNS[1:], path)
        frame = pd.DataFrame({"running": nums["active"], "pending": np.nan, "capacity": nums["total"]})
        unit, definition = "nodes", "active nodes (no queue in this trace: a lower bound of demand)"
    elif set(PLAIN_COLUMNS) <= cols:
        present = [c for c in ("demand", "running", "pending", "capacity") if c in cols]
        frame = _numbers(raw, present, path).reindex(columns=list(USAGE_COLUMNS))
        unit, definition = "GPUs", "demand column"
    else:
        raise SeriesFileError(f"{path}: unknown series format; expected columns {', '.join(HELIOS_COLUMNS)} "
                              f"(Helios), {', '.join(PHILLY_COLUMNS)} (Philly) or {', '.join(PLAIN_COLUMNS)}")
    if "demand" not in frame or frame["demand"].isna().all():
        frame["demand"] = frame["running"] + frame["pending"].fillna(0.0)
    frame.index = _times(raw["time"], path)
    frame = frame[list(USAGE_COLUMNS)].sort_index()
    if frame.empty:
        raise SeriesFileError(f"{path}: no rows")
    if resample is not None:
        frame = frame.resample(resample).mean()
    return UsageSeries(series_name(path), unit, definition, frame)


def read_capacity_file(path: str | Path, column: str) -> pd.Series:
    """A capacity step series from a table of dates by pool, such as Helios ``Earth_gpu_number.csv``
    (``date`` then one column per VC and ``total``); each value holds until the next row."""
    raw = _read_csv(path)
    time_col = next((c for c in ("date", "time") if c in raw.columns), None)
    if time_col is None:
        raise SeriesFileError(f"{path}: no date or time column")
    if column not in raw.columns:
        raise SeriesFileError(f"{path}: no column {column!r} (columns: {', '.join(map(str, raw.columns[:12]))}…)")
    values = _numbers(raw, [column], path)[column]
    values.index = _times(raw[time_col], path)
    return values.sort_index()


def capacity_on(index: pd.DatetimeIndex, capacity: pd.Series) -> pd.Series:
    """The step series ``capacity`` read at each time of ``index`` (the last value at or before it)."""
    return capacity.sort_index().reindex(index, method="ffill")
