"""Every query the pages make, cached with ``st.cache_data``: thin wrappers that turn the read
models of ``db.readmodels`` into data frames (and, for current state, classify them).

The store is ``GPUFLEET_DB_URL`` (what ``gpufleet dashboard --db`` sets), else the default store.
``GPUFLEET_DASHBOARD_NOW`` (epoch seconds) pins the dashboard's clock: tests use it, and so can
someone reviewing a store copied from a cluster after an incident. Live panels use a short TTL; range
queries a minute, with "now" rounded so that reruns within the TTL hit the cache.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine, inspect

from dashboard import analysis
from dashboard import definitions as d
from db import readmodels as rm
from db.engine import make_engine, parse_url, redact, resolve_url
from db.readmodels import Scope

LIVE_TTL = d.LIVE_REFRESH_SECONDS
RANGE_TTL = 60
NOW_ENV = "GPUFLEET_DASHBOARD_NOW"


def store_url() -> str:
    return os.environ.get("GPUFLEET_DB_URL") or resolve_url(None)


def now() -> float:
    """The dashboard's clock, rounded up to 10 s so that cached results are reused."""
    pinned = os.environ.get(NOW_ENV)
    if pinned:
        return float(pinned)
    return math.ceil(time.time() / 10) * 10


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    return make_engine(url)


def _frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns) if rows or columns else pd.DataFrame(rows)


@dataclass(frozen=True, slots=True)
class StoreStatus:
    ready: bool  # the schema is there and at least one node is known
    nodes: int
    problem: str | None  # why the store could not be read, in one line


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def store_status(url: str) -> StoreStatus:
    """Whether the store has data, without creating a SQLite file that is not there."""
    try:
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            if not Path(parsed.database).expanduser().exists():
                return StoreStatus(False, 0, None)
        eng = engine(url)
        if "nodes" not in inspect(eng).get_table_names():
            return StoreStatus(False, 0, f"{redact(url)} has no gpufleet schema yet "
                                         "(run 'gpufleet db upgrade --db URL').")
        nodes = len({o["node"] for o in rm.filter_options(eng)})
        return StoreStatus(nodes > 0, nodes, None)
    except Exception as exc:  # shown to the user as one line instead of a traceback
        first = (str(exc).splitlines() or [""])[0]
        return StoreStatus(False, 0, f"cannot read {redact(url)}: {type(exc).__name__}: {first}")


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def filter_options(url: str) -> pd.DataFrame:
    if not store_status(url).ready:
        return pd.DataFrame(columns=["cluster", "node", "model"])
    return _frame(rm.filter_options(engine(url)), ["cluster", "node", "model"])


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def inventory(url: str, scope: Scope) -> pd.DataFrame:
    cols = ["gpu_id", "index", "uuid", "model", "memory_total_bytes", "first_seen", "last_seen", "node_id",
            "node", "cluster"]
    return _frame(rm.inventory(engine(url), scope), cols)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def current_state(url: str, scope: Scope, start: float, at: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one classified row per GPU, the unresolved fatal or critical events in [start, at))."""
    eng = engine(url)
    latest = _frame(rm.latest_gpu_samples(eng, scope, at))
    unresolved = _frame(rm.unresolved_events(eng, scope, start, at), _EVENT_COLUMNS)
    current = analysis.classify_current(inventory(url, scope), latest, rm.node_intervals(eng, at), unresolved, at)
    return current, unresolved


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def state_series(url: str, scope: Scope, start: float, end: float) -> tuple[pd.DataFrame, str, int]:
    """GPUs per state per bucket (``analysis.state_frame``), the source read and the bucket size."""
    rows, source, step = rm.state_series(engine(url), scope, start, end)
    return analysis.state_frame(rows, inventory(url, scope), start, end, step), source.name, step


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def gpu_hours(url: str, scope: Scope, start: float, end: float) -> pd.DataFrame:
    cols = ["gpu_id", "node_id", "reported_hours", "busy_hours", "idle_allocated_hours", "idle_hours",
            "down_hours", "throttled_hours", "utilization"]
    return _frame(rm.gpu_state_hours(engine(url), scope, start, end), cols)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def utilization_matrix(url: str, scope: Scope, start: float, end: float) -> tuple[pd.DataFrame, int]:
    """Mean utilization per (GPU, bucket) for the first ``HEATMAP_MAX_GPUS`` GPUs by node, and how
    many GPUs the scope has in all."""
    inv = inventory(url, scope)
    shown = inv.head(d.HEATMAP_MAX_GPUS)
    df = _frame(rm.utilization_matrix(engine(url), [int(g) for g in shown["gpu_id"]], start, end),
                ["gpu_id", "ts", "utilization"])
    df = df.merge(shown[["gpu_id", "node", "index"]], on="gpu_id", how="left")
    df["label"] = [analysis.gpu_label(n, i) for n, i in zip(df["node"], df["index"], strict=True)]
    df["time"] = analysis.to_time(df["ts"])
    return df, len(inv)


_EVENT_COLUMNS = ["id", "ts", "kind", "code", "severity", "category", "fatal", "message", "recommended_action",
                  "gpu_id", "gpu_index", "details", "node", "node_id", "model"]


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def events(url: str, scope: Scope, start: float, end: float, node_id: int | None = None) -> pd.DataFrame:
    df = _frame(rm.events(engine(url), scope, start, end, limit=d.EVENT_TIMELINE_LIMIT, node_id=node_id),
                _EVENT_COLUMNS)
    df["time"] = analysis.to_time(df["ts"])
    return df


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def event_summary(url: str, scope: Scope, start: float, end: float) -> pd.DataFrame:
    cols = ["node", "day", "kind", "code", "category", "severity", "fatal", "gpu_level", "count"]
    return _frame(rm.event_summary(engine(url), scope, start, end), cols)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def outages(url: str, scope: Scope, start: float, end: float) -> pd.DataFrame:
    """Fatal GPU events with their GPU-hours lost (``analysis.lost_hours``)."""
    cols = ["id", "ts", "kind", "code", "category", "gpu_id", "node_id", "ok_again"]
    return analysis.lost_hours(_frame(rm.outages(engine(url), scope, start, end), cols), end)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def gpu_series(url: str, gpu_ids: tuple[int, ...], start: float, end: float) -> tuple[pd.DataFrame, str]:
    rows, source = rm.gpu_series(engine(url), gpu_ids, start, end)
    df = analysis.with_rates(_frame(rows))
    if len(df):
        df["time"] = analysis.to_time(df["ts"])
    return df, source.name


def _node_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = _frame(rows)
    if len(df):
        df["time"] = analysis.to_time(df["ts"])
    return df


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def interfaces(url: str, node_id: int, start: float, end: float) -> pd.DataFrame:
    return _node_frame(rm.interface_series(engine(url), node_id, start, end))


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def disks(url: str, node_id: int, start: float, end: float) -> pd.DataFrame:
    return _node_frame(rm.disk_series(engine(url), node_id, start, end))


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def filesystems(url: str, node_id: int, start: float, end: float) -> pd.DataFrame:
    return _node_frame(rm.filesystem_series(engine(url), node_id, start, end))


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def processes(url: str, gpu_ids: tuple[int, ...], at: float) -> pd.DataFrame:
    cols = ["gpu_id", "ts", "pid", "name", "used_memory_bytes", "mig_instance"]
    return _frame(rm.latest_processes(engine(url), gpu_ids, at), cols)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def bench_results(url: str, scope: Scope, start: float, end: float, node_id: int | None = None,
                  gpu_id: int | None = None) -> pd.DataFrame:
    """Benchmark results in scope with their environment flattened (``env_*``) and straggler
    verdicts. Fleet medians are taken over the whole fleet, whatever the filters."""
    cols = ["id", "metric", "unit", "value", "median", "p90", "p99", "cv", "count", "gpu_id", "run_id", "workload",
            "suite", "device", "status", "started_at", "finished_at", "config", "environment", "node_id", "node",
            "gpu_index", "gpu_model"]
    df = _frame(rm.bench_results(engine(url), Scope(), start, end), cols)
    env = pd.DataFrame([analysis.flatten("env", e) for e in df["environment"]], index=df.index)
    df = pd.concat([df, env], axis=1)
    df = analysis.stragglers(df) if len(df) else df.assign(fleet_median=None, ratio=None, straggler=False, peers=0)
    if scope:
        inv = inventory(url, scope)
        df = df[df["gpu_id"].isin(inv["gpu_id"]) | (df["gpu_id"].isna() & df["node"].isin(inv["node"]))]
    if node_id is not None:
        df = df[df["node_id"] == node_id]
    if gpu_id is not None:
        df = df[df["gpu_id"] == gpu_id]
    df = df.assign(time=analysis.to_time(df["started_at"]),
                   label=[analysis.gpu_label(n, i) for n, i in zip(df["node"], df["gpu_index"], strict=True)])
    return df.reset_index(drop=True)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def run_conditions(url: str, spans: tuple[tuple[int, float, float], ...]) -> pd.DataFrame:
    cols = ["gpu_id", "start", "end", "samples", "throttled_ratio", "thermal_ratio", "power_capped_ratio",
            "temperature_max_celsius", "power_avg_watts", "sm_clock_avg_hz"]
    return _frame(rm.run_conditions(engine(url), spans), cols)
