"""The store as input to the forecast and the simulator: demand and capacity over a range, the fleet as a
cluster description, and a small job trace (the store's jobs, or a synthetic one sized to the fleet).

The dashboard's Capacity page runs these; demand is chosen as ``gpufleet plan forecast`` chooses it
(the jobs table when it has jobs in the range, else GPU telemetry), so both show the same forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from db.readmodels import inventory
from planner.cluster import MILLI, Cluster, NodeSpec, make_cluster, make_requests
from planner.demand import UsageSeries, demand_from_jobs, telemetry_usage
from planner.forecast import Backtest, CapacityAnswer, Forecast, backtest, capacity_answer, capacity_path, fit_forecast
from planner.jobs import load_jobs
from planner.simulate import JobTrace, synthetic_trace

UNCONSTRAINED_CPU = 10**9  # the store does not know what CPU and memory a job asked for: never limiting
UNCONSTRAINED_MEMORY = 10**9
SYNTHETIC_JOBS = 400
SYNTHETIC_SIZES = (1, 2, 4, 8)
SYNTHETIC_MEAN_RUNTIME = 3600.0
MAX_TRACE_JOBS = 2000


def store_usage(engine: Engine, start: float, end: float) -> UsageSeries | None:
    """Demand and capacity per hour over [start, end): running + pending GPUs of the jobs table when it
    has jobs (capacity from telemetry), else allocated GPUs from telemetry; None when neither has data."""
    telemetry = telemetry_usage(engine, start, end)
    jobs = load_jobs(engine, start, end)
    if len(jobs):
        frame = demand_from_jobs(jobs, start, end)
        frame["capacity"] = telemetry["capacity"].reindex(frame.index)
        return UsageSeries("store jobs", "GPUs", "running + pending GPUs of the jobs table", frame)
    if len(telemetry):
        return UsageSeries("store telemetry", "GPUs", "allocated GPUs from telemetry (busy or holding a process; "
                           "pending work is invisible, so a lower bound)", telemetry)
    return None


def store_cluster(engine: Engine) -> Cluster:
    """The fleet's nodes with their GPU count and model (CPU and memory not limiting)."""
    nodes: dict[str, list[str | None]] = {}
    for g in inventory(engine):
        nodes.setdefault(g["node"], []).append(g["model"])
    specs = [NodeSpec(name, UNCONSTRAINED_CPU, UNCONSTRAINED_MEMORY, len(models),
                      max(set(models), key=models.count) if models else None)
             for name, models in sorted(nodes.items())]
    return make_cluster(specs)


@dataclass(frozen=True)
class Trace:
    trace: JobTrace
    source: str  # what the trace is, in words


def demands_of(gpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(num_gpu, gpu_milli) of job sizes in GPUs (part of one GPU below 1)."""
    partial = (gpus > 0) & (gpus < 1)
    num = np.where(partial, 1, np.ceil(gpus)).astype(np.int64)
    milli = np.where(partial, np.round(gpus * MILLI), np.where(num > 0, MILLI, 0)).astype(np.int64)
    return num, milli


def store_trace(engine: Engine, cluster: Cluster, start: float, end: float, *, seed: int = 0,
                load: float = 0.9) -> Trace:
    """The jobs that started in [start, end) (submit and run time as logged), the newest
    ``MAX_TRACE_JOBS``; without jobs, ``SYNTHETIC_JOBS`` jobs of 1-8 GPUs (up to a node's GPUs), exponential
    run times of mean one hour, arriving at ``load`` × the fleet's GPUs."""
    jobs = load_jobs(engine, start, end)
    ran = jobs[jobs["start_ts"].notna() & jobs["end_ts"].notna() & (jobs["gpus"] > 0)].tail(MAX_TRACE_JOBS)
    if len(ran):
        gpus = ran["gpus"].to_numpy(float)
        num, milli = demands_of(gpus)
        n = len(ran)
        reqs = make_requests([str(x) for x in ran["external_id"]], np.zeros(n), np.zeros(n), num, milli)
        submit = ran["submit_ts"].fillna(ran["start_ts"]).to_numpy(float)
        duration = np.maximum(ran["end_ts"].to_numpy(float) - ran["start_ts"].to_numpy(float), 0.0)
        return Trace(JobTrace(reqs, submit - submit.min(), duration), f"the store's {n:,} jobs that ran in the range")
    per_node = max(1, int(cluster.gpu_count.max(initial=1)))
    sizes = np.array([s for s in SYNTHETIC_SIZES if s <= per_node] or [1], dtype=float)
    num, milli = demands_of(sizes)
    demands = make_requests([f"{int(s)}-gpu" for s in sizes], np.zeros(len(sizes)), np.zeros(len(sizes)), num, milli)
    runtimes = np.random.default_rng(seed).exponential(SYNTHETIC_MEAN_RUNTIME, size=4096)
    trace = synthetic_trace(SYNTHETIC_JOBS, runtimes, demands, cluster, load=load, seed=seed)
    return Trace(trace, f"{SYNTHETIC_JOBS} synthetic jobs of {', '.join(str(int(s)) for s in sizes)} GPUs "
                 f"(no jobs in the store), mean run time {SYNTHETIC_MEAN_RUNTIME / 3600:g} h, offered load "
                 f"{load:.0%} of the fleet's GPUs")


def gpus_per_node(cluster: Cluster, model: str) -> int:
    """GPUs of the cluster's first node of ``model`` (8 for a model it does not have)."""
    counts = [int(c) for c, m in zip(cluster.gpu_count, cluster.model_id, strict=True)
              if m >= 0 and cluster.models[m] == model]
    return counts[0] if counts else 8


def nodes_for(gpus: int, per_node: int) -> int:
    return max(0, math.ceil(gpus / max(per_node, 1)))


MIN_FORECAST_HOURS = 48


@dataclass(frozen=True)
class Outlook:
    """A forecast of ``usage``'s demand against its usable capacity, the operator's answer, and the
    backtest (or why there is none)."""

    usage: UsageSeries
    forecast: Forecast
    usable: pd.Series
    answer: CapacityAnswer
    latest_capacity: float
    backtest: Backtest | None
    backtest_note: str | None


def capacity_outlook(usage: UsageSeries, *, horizon_hours: int, target: float = 0.8, per_node: int = 8,
                     model: str | None = None, unavailable: int = 0,
                     backtest_hours: int = 7 * 24) -> Outlook | str:
    """What ``gpufleet plan forecast`` computes from the store, step for step (latest capacity: the most
    GPUs up in the last 24 hours); a sentence saying why not when the history is too short."""
    demand = usage.frame["demand"]
    hours = int(demand.notna().sum())
    if hours < MIN_FORECAST_HOURS:
        return f"{hours} hours of demand in the store; a forecast needs at least {MIN_FORECAST_HOURS}"
    capacity = usage.frame["capacity"].dropna()
    if not len(capacity):
        return "no capacity known: no GPU telemetry in the range"
    latest = float(capacity.iloc[-24:].max())
    fc = fit_forecast(demand, horizon_hours)
    usable = capacity_path(fc.frame.index, latest, unavailable=unavailable)
    answer = capacity_answer(fc, usable, target=target, per_node=per_node if usage.unit == "GPUs" else 1,
                             unit=usage.unit, model=model)
    try:
        bt, note = backtest(demand, backtest_hours), None
    except ValueError as exc:
        bt, note = None, str(exc)
    return Outlook(usage, fc, usable, answer, latest, bt, note)
