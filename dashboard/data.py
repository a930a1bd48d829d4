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

from alerts.health import RANK as HEALTH_RANK
from alerts.silences import list_silences
from dashboard import analysis
from dashboard import definitions as d
from db import alertviews as av
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
        if store_file_missing(url):
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


def store_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (opening it would create it)."""
    parsed = parse_url(url)
    return bool(parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:"
                and not Path(parsed.database).expanduser().exists())


def has_tables(url: str, tables: tuple[str, ...]) -> bool:
    """Whether the store has all of ``tables`` (the schema revision that adds them has run); not cached."""
    return set(tables) <= set(inspect(engine(url)).get_table_names())


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


# -- alerting (the controller's tables) ---------------------------------------------------------

ALERTING_TABLES = ("alerts", "silences", "notifications", "delivery_attempts", "health_states")


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def alerting_ready(url: str) -> bool:
    """Whether the store has the controller's tables (schema 0003 or later)."""
    return has_tables(url, ALERTING_TABLES)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def alerting_activity(url: str) -> dict[str, Any]:
    """``db.alertviews.activity``: has the controller written anything, and when health last."""
    return av.activity(engine(url))


def alert_labels(rule: str, labels: Any) -> dict[str, str]:
    """An alert's labels as routing and silences see them (``alerts.routing.labels_of``)."""
    out = {"alertname": rule}
    out.update({str(k): str(v) for k, v in (labels or {}).items() if v is not None and v != ""})
    return out


_ALERT_COLUMNS = ["fingerprint", "rule", "state", "severity", "node", "gpu", "model", "summary", "action", "since",
                  "active_since", "starts_at", "ends_at", "updated_at", "value", "silenced_by", "labels",
                  "annotations", "node_id", "gpu_id", "cluster"]


def _gpu_index(row: dict[str, Any], labels: dict[str, str]) -> float | None:
    if row.get("gpu") is not None:
        return float(row["gpu"])
    text = labels.get("gpu", "")
    return float(text) if text.isdigit() else None


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def alerts(url: str, scope: Scope, start: float, end: float, at: float) -> pd.DataFrame:
    """Pending and firing alerts, then those resolved in [start, end), one row each: severity,
    node and GPU (from the store, else the labels), summary, recommended action (annotations), since
    (fired, or pending since) and the ids of the silences active at ``at`` that mute it."""
    eng = engine(url)
    active = [s for s in list_silences(eng, now=at) if s.state == "active"]
    rows = []
    for r in av.alerts(eng, scope, start, end):
        labels = alert_labels(r["rule"], r["labels"])
        notes = {str(k): v for k, v in (r["annotations"] or {}).items()}
        rows.append({**r, "severity": labels.get("severity", "none"), "node": r["node"] or labels.get("node"),
                     "gpu": _gpu_index(r, labels), "model": r["model"] or labels.get("model"),
                     "summary": notes.get("summary") or notes.get("description"),
                     "action": notes.get("recommended_action") or notes.get("runbook"),
                     "since": r["starts_at"] if r["state"] != "pending" and r["starts_at"] is not None
                     else r["active_since"],
                     "silenced_by": ", ".join(f"#{s.id}" for s in active if s.matches(labels)) or None})
    return _frame(rows, _ALERT_COLUMNS)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def alert_counts(url: str, scope: Scope, start: float, end: float) -> pd.DataFrame:
    """Alerts per state and severity: pending and firing now, resolved in [start, end)."""
    df = _frame(av.alert_counts(engine(url), scope, start, end), ["state", "severity", "count"])
    df["severity"] = df["severity"].fillna("none")
    return df


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def silences(url: str, start: float, at: float) -> pd.DataFrame:
    """Silences active or pending at ``at``, and those that expired in [start, at); newest first."""
    rows = [{"id": s.id, "state": s.state, "matchers": ", ".join(s.matchers_text), "starts_at": s.starts_at,
             "ends_at": s.ends_at, "created_by": s.created_by, "comment": s.comment, "created_at": s.created_at}
            for s in list_silences(engine(url), include_expired=True, now=at)
            if s.state != "expired" or s.ends_at >= start]
    return _frame(rows, ["id", "state", "matchers", "starts_at", "ends_at", "created_by", "comment", "created_at"])


def scope_nodes(url: str, scope: Scope) -> set[str]:
    """The node names a scope covers (nodes without GPUs too, unless a model is chosen)."""
    o = filter_options(url)
    keep = pd.Series(True, index=o.index)
    for column, chosen in (("cluster", scope.clusters), ("node", scope.nodes), ("model", scope.models)):
        if chosen:
            keep &= o[column].isin(chosen)
    return set(o.loc[keep, "node"].dropna())


def payload_summary(payload: Any) -> dict[str, Any]:
    """What a notification carries: its group labels, how many alerts, their names and nodes."""
    body = payload if isinstance(payload, dict) else {}
    carried = [a for a in body.get("alerts") or [] if isinstance(a, dict)]
    labels = [a.get("labels") or {} for a in carried]
    return {"group": ", ".join(f"{k}={v}" for k, v in sorted((body.get("groupLabels") or {}).items())) or None,
            "alerts": len(carried),
            "alertnames": ", ".join(sorted({str(x["alertname"]) for x in labels if x.get("alertname")})),
            "nodes": ", ".join(sorted({str(x["node"]) for x in labels if x.get("node")}))}


_NOTIFICATION_COLUMNS = ["id", "receiver", "group", "status", "state", "retrying", "attempts", "alerts", "alertnames",
                         "nodes", "created_at", "delivered_at", "next_attempt_at", "last_error", "group_key"]
_ATTEMPT_COLUMNS = ["id", "notification_id", "ts", "receiver", "ok", "http_status", "latency_seconds", "error",
                    "controller", "notification_state", "time"]


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def deliveries(url: str, scope: Scope, start: float, end: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the notifications of the delivery log, the delivery attempts in [start, end)).

    ``retrying``: not finished and already tried (an attempt failed; the outbox backs off). With a
    scope, only notifications carrying an alert of a node in scope, and their attempts."""
    eng = engine(url)
    rows = []
    for r in av.notifications(eng, start, end):
        carried = payload_summary(r.pop("payload"))
        rows.append({**r, **carried, "retrying": r["state"] in av.UNFINISHED and r["attempts"] > 0})
    notes = _frame(rows, _NOTIFICATION_COLUMNS)
    if scope:
        nodes = scope_nodes(url, scope)
        notes = notes[notes["nodes"].map(lambda n: bool(set(str(n).split(", ")) & nodes)).astype(bool)]
    tries = _frame(av.delivery_attempts(eng, start, end), _ATTEMPT_COLUMNS[:-2])
    if scope:
        tries = tries[tries["notification_id"].isin(notes["id"])]
    state = dict(zip(notes["id"], notes["state"], strict=True))
    tries = tries.assign(notification_state=[state.get(i) for i in tries["notification_id"]],
                         time=analysis.to_time(tries["ts"]))
    return notes.reset_index(drop=True), tries.reset_index(drop=True)


_HEALTH_COLUMNS = ["entity", "entity_id", "node_id", "node", "cluster", "gpu", "uuid", "model", "state", "reasons",
                   "recommended_action", "since", "updated_at"]


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def health(url: str, scope: Scope) -> pd.DataFrame:
    """Stored GPU and node health in scope, worst first (nodes before their GPUs); ``reasons`` as one line."""
    df = _frame(av.health_states(engine(url), scope), _HEALTH_COLUMNS)
    if not len(df):
        return df
    df["reasons"] = ["; ".join(map(str, r)) if isinstance(r, list) else r for r in df["reasons"]]
    df["rank"] = [-HEALTH_RANK.get(s, 0) for s in df["state"]]
    df["is_gpu"] = df["entity"] != "node"
    df = df.sort_values(["rank", "is_gpu", "node", "gpu"], na_position="first", kind="stable")
    return df.drop(columns=["rank", "is_gpu"]).reset_index(drop=True)


# -- planner (issue 7): the Capacity and Recommendations pages ----------------------------------

PLANNER_HISTORY_SECONDS = 28 * 86400  # the history a forecast reads, as `gpufleet plan forecast`


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def recommendations(url: str, at: float, window: float) -> list[Any]:
    """``planner.recommend.recommend`` over [at − window, at): what `gpufleet plan recommend` lists."""
    from planner.recommend import recommend

    return recommend(engine(url), now=at, window=window)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def capacity_outlook(url: str, at: float, horizon_hours: int, target: float, backtest_hours: int) -> Any:
    """(the last 28 days' demand, its forecast (``planner.whatif.capacity_outlook``) or why there is none)."""
    from planner.demand import fleet_gpu_model, unhealthy_gpus
    from planner.whatif import capacity_outlook as outlook
    from planner.whatif import store_usage

    eng = engine(url)
    usage = store_usage(eng, at - PLANNER_HISTORY_SECONDS, at)
    if usage is None:
        return None, "no jobs and no GPU telemetry in the last 28 days"
    return usage, outlook(usage, horizon_hours=horizon_hours, target=target, model=fleet_gpu_model(eng),
                          unavailable=unhealthy_gpus(eng), backtest_hours=backtest_hours)


@st.cache_data(ttl=RANGE_TTL, show_spinner=False)
def whatif(url: str, at: float, queue: str, placement: str, add_model: str | None, add_gpus: int,
           target_p90_s: float | None) -> dict[str, Any]:
    """Simulate the store's last week of jobs (or a synthetic trace sized to the fleet) on the fleet as it
    is and with ``add_gpus`` more GPUs of ``add_model``; with ``target_p90_s``, the fewest added nodes of
    that model that keep the p90 queueing delay under it."""
    from planner.simulate import capacity_search, node_template, simulate
    from planner.whatif import gpus_per_node, nodes_for, store_cluster, store_trace

    eng = engine(url)
    cluster = store_cluster(eng)
    trace = store_trace(eng, cluster, at - 7 * 86400, at)
    out: dict[str, Any] = {"trace": trace.source, "jobs": len(trace.trace)}
    base = simulate(cluster, trace.trace, queue, placement)
    out["runs"] = [{"fleet": "as is", **base.summary()}]
    out["series"] = {"as is": base.series()}
    if add_model:
        template = node_template(cluster, add_model, gpus_per_node(cluster, add_model))
        added = nodes_for(add_gpus, template.gpus)
        if added:
            more = simulate(cluster.with_nodes(template, added), trace.trace, queue, placement)
            label = f"+{added * template.gpus} {add_model}"
            out["runs"].append({"fleet": label, **more.summary()})
            out["series"][label] = more.series()
        if target_p90_s is not None:
            search = capacity_search(cluster, trace.trace, template, target_p90_s, max_added=64, queue=queue,
                                     placement=placement)
            out["search"] = {"model": add_model, "gpus_per_node": template.gpus, "added_nodes": search.added_nodes,
                             "added_gpus": search.added_gpus, "target_p90_s": target_p90_s,
                             "evaluations": dict(sorted(search.evaluations.items()))}
    return out
