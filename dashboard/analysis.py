"""Pure pandas over read-model rows: current GPU state, state hours, outages, MTBF, throttling
bands and stragglers. No Streamlit and no database here; ``dashboard.definitions`` says what each
result means."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from collectors.nvml import decode_reasons
from dashboard import definitions as d
from db.stragglers import MIN_PEERS, judge
from db.stragglers import higher_is_better as higher_is_better  # re-exported; its home is db.stragglers

GPU_COLUMNS = ["gpu_id", "node_id", "node", "cluster", "index", "model", "uuid"]


def to_time(seconds: Any) -> Any:
    """Epoch seconds (a value or a Series) as UTC timestamps."""
    return pd.to_datetime(seconds, unit="s", utc=True)


def gpu_label(node: Any, index: Any) -> str:
    """``node / GPU i``; just the node for node-wide things (a multi-GPU benchmark run)."""
    return f"{node} / GPU {int(index)}" if pd.notna(index) else str(node)


def recent_seconds(interval: float | None) -> float:
    """How old a GPU's newest sample may be before the GPU counts as down."""
    return max(d.RECENT_MIN_SECONDS, d.RECENT_INTERVALS * (interval or d.DEFAULT_INTERVAL_SECONDS))


# -- current state ------------------------------------------------------------------------------


def classify_current(inventory: pd.DataFrame, latest: pd.DataFrame, intervals: dict[int, float],
                     unresolved: pd.DataFrame, now: float) -> pd.DataFrame:
    """One row per GPU of the inventory: its newest sample, its state and its flags."""
    inv = inventory.reindex(columns=GPU_COLUMNS + ["last_seen"])
    cols = ["gpu_id", "ts", "status", "error", "utilization_gpu_ratio", "power_watts", "power_limit_watts",
            "temperature_gpu_celsius", "clock_event_reasons", "process_count", "ecc_uncorrected_volatile_total",
            "remapped_rows_pending", "remapped_rows_failure"]
    latest = latest.reindex(columns=cols)
    if not len(inv):  # nothing in scope: the same columns, no rows
        inv, latest = inv.astype({"gpu_id": "float64"}), latest.astype({"gpu_id": "float64"})
    df = inv.merge(latest, on="gpu_id", how="left")
    recent = df["node_id"].map(lambda n: recent_seconds(intervals.get(int(n))) if pd.notna(n) else d.RECENT_MIN_SECONDS)
    fresh = df["ts"].notna() & (now - df["ts"].fillna(-math.inf) <= recent)
    df["down"] = ~(fresh & (df["status"] == "ok"))
    util = pd.to_numeric(df["utilization_gpu_ratio"], errors="coerce").fillna(0.0)
    procs = pd.to_numeric(df["process_count"], errors="coerce").fillna(0)
    up = ~df["down"]
    df["busy"] = up & (util >= d.BUSY_UTILIZATION)
    df["idle_allocated"] = up & ~df["busy"] & (procs > 0)
    df["idle"] = up & ~df["busy"] & ~df["idle_allocated"]
    reasons = pd.to_numeric(df["clock_event_reasons"], errors="coerce").fillna(0).astype("int64")
    df["throttled"] = up & ((reasons & d.THROTTLE_MASK) != 0)
    remap = df["remapped_rows_pending"].eq(True) | df["remapped_rows_failure"].eq(True)
    bad_ids = set(unresolved["gpu_id"].dropna().astype("int64")) if len(unresolved) else set()
    df["unhealthy"] = df["gpu_id"].isin(bad_ids) | remap
    df["state"] = "idle"
    df.loc[df["idle_allocated"], "state"] = "idle-allocated"
    df.loc[df["busy"], "state"] = "busy"
    df.loc[df["down"], "state"] = "down"
    df["reasons"] = [", ".join(decode_reasons(int(r) & d.THROTTLE_MASK)) for r in reasons]
    df["age_seconds"] = now - df["ts"]
    df["label"] = [gpu_label(n, i) for n, i in zip(df["node"], df["index"], strict=True)]
    return df


def headline(current: pd.DataFrame) -> dict[str, float | int | None]:
    """The overview's headline numbers from ``classify_current``'s frame."""
    up = current[~current["down"]]
    util = pd.to_numeric(up["utilization_gpu_ratio"], errors="coerce").dropna()
    power = pd.to_numeric(up["power_watts"], errors="coerce").dropna()
    return {
        "gpus": len(current), "busy": int(current["busy"].sum()),
        "idle": int((current["idle"] | current["idle_allocated"]).sum()),
        "idle_allocated": int(current["idle_allocated"].sum()), "throttled": int(current["throttled"].sum()),
        "unhealthy": int(current["unhealthy"].sum()), "down": int(current["down"].sum()),
        "utilization": float(util.mean()) if len(util) else None,
        "power_watts": float(power.sum()) if len(power) else None,
    }


def problems(current: pd.DataFrame, unresolved: pd.DataFrame) -> pd.DataFrame:
    """The current problems, worst first: unresolved fatal events, down GPUs, ECC, throttling."""
    rows: list[dict[str, Any]] = []
    for e in unresolved.itertuples(index=False):
        what = f"XID {e.code}" if e.kind == "xid" else str(e.kind).replace("_", " ")
        rows.append({"rank": 0, "node": e.node, "gpu": e.gpu_index, "problem": what, "since": e.ts,
                     "detail": e.message, "action": e.recommended_action})
    for g in current.itertuples(index=False):
        if g.down:
            why = f"status {g.status}" if pd.notna(g.status) and g.status != "ok" else "no recent samples"
            rows.append({"rank": 1, "node": g.node, "gpu": g.index, "problem": "down", "since": g.ts,
                         "detail": why if pd.isna(g.error) else f"{why}: {g.error}", "action": None})
        unc = g.ecc_uncorrected_volatile_total
        pending, failed = _true(g.remapped_rows_pending), _true(g.remapped_rows_failure)
        if (pd.notna(unc) and unc > 0) or pending or failed:
            parts = [f"{int(unc)} uncorrected" if pd.notna(unc) and unc > 0 else None,
                     "row remap pending" if pending else None, "row remap failed" if failed else None]
            rows.append({"rank": 2, "node": g.node, "gpu": g.index, "problem": "ECC", "since": g.ts,
                         "detail": ", ".join(p for p in parts if p), "action": None})
        if g.throttled:
            temp = f" at {g.temperature_gpu_celsius:.0f} °C" if pd.notna(g.temperature_gpu_celsius) else ""
            rows.append({"rank": 3, "node": g.node, "gpu": g.index, "problem": "throttled", "since": g.ts,
                         "detail": f"{g.reasons}{temp}", "action": None})
    out = pd.DataFrame(rows, columns=["rank", "node", "gpu", "problem", "since", "detail", "action"])
    return out.sort_values(["rank", "since"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _true(value: Any) -> bool:
    return bool(pd.notna(value) and value)


# -- state over a range -------------------------------------------------------------------------


def state_frame(series: list[dict[str, Any]], inventory: pd.DataFrame, start: float, end: float,
                step: int) -> pd.DataFrame:
    """GPUs per state in each bucket, with GPUs that sent nothing counted as down, and each
    bucket's duration in hours (clipped to the range)."""
    cols = ["ts", "busy", "idle_allocated", "idle", "down", "throttled", "reporting"]
    df = pd.DataFrame(series, columns=cols).fillna(0.0)
    first_seen = inventory["first_seen"].to_numpy() if len(inventory) else []
    expected = [int((first_seen < b + step).sum()) if len(first_seen) else 0 for b in df["ts"]]
    missing = (pd.Series(expected, index=df.index, dtype="float64") - df["reporting"]).clip(lower=0)
    df["down"] = df["down"] + missing
    df["hours"] = [(min(b + step, end) - max(b, start)) / 3600 for b in df["ts"]]
    df = df.rename(columns={"idle_allocated": "idle-allocated"})
    df["time"] = to_time(df["ts"])
    return df


def state_hours(frame: pd.DataFrame) -> dict[str, float]:
    """GPU-hours per state and throttled: the area under ``state_frame``."""
    return {s: float((frame[s] * frame["hours"]).sum()) if len(frame) else 0.0 for s in (*d.STATES, "throttled")}


# -- failures -----------------------------------------------------------------------------------


def lost_hours(outages: pd.DataFrame, end: float) -> pd.DataFrame:
    """Each fatal GPU event's GPU-hours lost; ``incident`` is False for events inside an outage
    already counted (so XID 79 followed by ``gpu_lost`` is one failure)."""
    df = outages.sort_values(["gpu_id", "ts"]).reset_index(drop=True) if len(outages) else outages.copy()
    lost, incident = [], []
    prev_gpu, prev_end = None, -math.inf
    for r in df.itertuples(index=False):
        stop = end if pd.isna(r.ok_again) else min(float(r.ok_again), end)
        if r.gpu_id != prev_gpu:
            prev_gpu, prev_end = r.gpu_id, -math.inf
        begin = max(float(r.ts), prev_end)
        incident.append(bool(r.ts >= prev_end))
        lost.append(max(0.0, stop - begin) / 3600)
        prev_end = max(prev_end, stop)
    df = df.assign(lost_hours=pd.Series(lost, index=df.index, dtype="float64"),
                   incident=pd.Series(incident, index=df.index, dtype="bool"))
    return df


def mtbf(gpu_hours: pd.DataFrame, inventory: pd.DataFrame, failed: pd.DataFrame, start: float,
         end: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per component, per node): observed hours, failures and MTBF in hours (None: no failure).

    ``gpu_hours`` is ``readmodels.gpu_state_hours``; ``failed`` is ``failures``' frame. GPU: hours
    GPUs reported ok / GPU incidents; node: per node, the hours of its longest-up GPU / all failures
    on nodes; fleet: the range's wall-clock hours / all failures."""
    gh = gpu_hours.merge(inventory.reindex(columns=["gpu_id", "node"]), on="gpu_id", how="left")
    up = (gh["reported_hours"] - gh["down_hours"]).clip(lower=0) if len(gh) else pd.Series(dtype="float64")
    per_node_hours = gh.assign(up_hours=up).groupby("node")["up_hours"].max() if len(gh) else pd.Series(dtype="float64")
    gpu_failures = int(failed["gpu_level"].sum()) if len(failed) else 0
    node_counts = failed.groupby("node").size() if len(failed) else pd.Series(dtype="int64")
    total = int(node_counts.sum())

    def ratio(hours: float, count: int) -> float | None:
        return hours / count if count else None

    range_hours = (end - start) / 3600
    summary = pd.DataFrame([
        {"component": "GPU", "observed_hours": float(up.sum()), "failures": gpu_failures,
         "mtbf_hours": ratio(float(up.sum()), gpu_failures)},
        {"component": "node", "observed_hours": float(per_node_hours.sum()), "failures": total,
         "mtbf_hours": ratio(float(per_node_hours.sum()), total)},
        {"component": "fleet", "observed_hours": range_hours, "failures": total,
         "mtbf_hours": ratio(range_hours, total)},
    ])
    nodes = pd.DataFrame({"node_hours": per_node_hours}).join(node_counts.rename("failures"), how="outer")
    nodes = nodes.fillna({"node_hours": 0.0, "failures": 0}).astype({"failures": "int64"})
    nodes["mtbf_hours"] = [ratio(h, int(f)) for h, f in zip(nodes["node_hours"], nodes["failures"], strict=True)]
    return summary, nodes.rename_axis("node").reset_index()


def failures(events_summary: pd.DataFrame, lost: pd.DataFrame, inventory: pd.DataFrame) -> pd.DataFrame:
    """One row per failure: each fatal GPU incident (from ``lost_hours``) and each fatal node-level
    event (no GPU), with its node, UTC day (epoch seconds) and category."""
    node_of = dict(zip(inventory["gpu_id"], inventory["node"], strict=True)) if len(inventory) else {}
    rows = [{"node": node_of.get(r.gpu_id), "day": float(r.ts) // 86400 * 86400, "category": r.category,
             "gpu_level": True} for r in (lost[lost["incident"]] if len(lost) else lost).itertuples(index=False)]
    if len(events_summary):
        node_level = events_summary[events_summary["fatal"].eq(True) & events_summary["gpu_level"].eq(0)]
        for r in node_level.itertuples(index=False):
            rows.extend({"node": r.node, "day": float(r.day), "category": r.category, "gpu_level": False}
                        for _ in range(int(r.count)))
    return pd.DataFrame(rows, columns=["node", "day", "category", "gpu_level"])


# -- node detail --------------------------------------------------------------------------------


def reasons_mask(series: pd.DataFrame) -> pd.Series:
    """Throttling clock-event bits per row: raw samples carry them; rollups only say thermal/power."""
    if "clock_event_reasons" in series:
        return pd.to_numeric(series["clock_event_reasons"], errors="coerce").fillna(0).astype("int64") & d.THROTTLE_MASK
    mask = pd.Series(0, index=series.index, dtype="int64")
    for col, bits in (("thermal_ratio", 0x20), ("power_capped_ratio", 0x4)):
        if col in series:
            mask = mask | ((pd.to_numeric(series[col], errors="coerce").fillna(0) > 0) * bits)
    if "throttled_ratio" in series:  # throttled for another reason: HW slowdown
        other = (pd.to_numeric(series["throttled_ratio"], errors="coerce").fillna(0) > 0) & (mask == 0)
        mask = mask | (other * 0x8)
    return mask


def _bands(series: pd.DataFrame, mask: pd.Series, step: float, limit: int,
           describe: Any) -> pd.DataFrame:
    """Runs of consecutive timestamps where ``mask`` (bits per row) is set for the same GPUs."""
    cols = ["start", "end", "reasons", "gpus"]
    df = series.assign(mask=mask)
    df = df[df["mask"] != 0] if len(df) else df
    if not len(df):
        return pd.DataFrame(columns=cols)
    per_ts = df.groupby("ts").agg(mask=("mask", _or),
                                  gpus=("gpu_index", lambda g: tuple(sorted({int(x) for x in g if pd.notna(x)}))))
    bands: list[dict[str, Any]] = []
    for ts, row in per_ts.iterrows():
        t = float(ts)  # type: ignore[arg-type]
        last = bands[-1] if bands else None
        if last and last["mask"] == row["mask"] and last["gpus"] == row["gpus"] and t - last["last"] <= step * 1.5:
            last["last"] = t
            continue
        bands.append({"mask": row["mask"], "gpus": row["gpus"], "first": t, "last": t})
    return pd.DataFrame([{"start": b["first"], "end": b["last"] + step, "gpus": ", ".join(map(str, b["gpus"])),
                          "reasons": describe(b["mask"])} for b in bands[-limit:]], columns=cols)


def throttle_bands(series: pd.DataFrame, step: float, limit: int = 200) -> pd.DataFrame:
    """Intervals in which any shown GPU had a throttling reason, with the reasons and GPUs."""
    mask = reasons_mask(series) if len(series) else pd.Series(dtype="int64")
    return _bands(series, mask, step, limit, lambda m: ", ".join(decode_reasons(m)))


def down_bands(series: pd.DataFrame, step: float, limit: int = 200) -> pd.DataFrame:
    """Intervals in which a shown GPU reported a non-ok status (rollups: had non-ok samples)."""
    if "status" in series:
        mask = series["status"].ne("ok").astype("int64")
    elif {"ok_samples", "samples"} <= set(series.columns):
        mask = (series["ok_samples"] < series["samples"]).astype("int64")
    else:
        mask = pd.Series(0, index=series.index, dtype="int64")
    return _bands(series, mask, step, limit, lambda _m: "down")


def _or(values: pd.Series) -> int:
    out = 0
    for v in values:
        out |= int(v)
    return out


def with_rates(series: pd.DataFrame) -> pd.DataFrame:
    """Add NVLink byte rates (B/s) derived from the cumulative counters, per GPU."""
    if not {"nvlink_tx_bytes_total", "nvlink_rx_bytes_total"} <= set(series.columns) or not len(series):
        return series
    df = series.sort_values(["gpu_id", "ts"]).copy()
    dt = df.groupby("gpu_id")["ts"].diff()
    for col in ("tx", "rx"):
        delta = df.groupby("gpu_id")[f"nvlink_{col}_bytes_total"].diff()
        df[f"nvlink_{col}_bytes_per_second"] = (delta / dt).where(delta >= 0)
    return df


# -- benchmarks ---------------------------------------------------------------------------------


def stragglers(results: pd.DataFrame, ratio: float = d.STRAGGLER_RATIO, min_peers: int = MIN_PEERS) -> pd.DataFrame:
    """Results with the fleet median of their comparable group (workload, metric, parameters, device
    model and the rest of the fingerprint), their ratio to it, severity (warn, fail), robust z-score
    and whether they are stragglers (``db.stragglers.judge``, the definition the ``bench_slow``
    alert and events use too). Groups with fewer than ``min_peers`` results have no verdict."""
    df = results.copy()
    if "env_gpu_model" in df:
        df["gpu_model"] = df["gpu_model"].fillna(df["env_gpu_model"])
    df["gpu_model"] = df["gpu_model"].fillna("unknown")
    rows = df.reindex(columns=["workload", "metric", "unit", "gpu_model", "value", "status", "config",
                               "environment"]).to_dict("records")
    verdicts = judge(rows, ratio, min_peers)
    df["fleet_median"] = pd.Series([v.fleet_median for v in verdicts], index=df.index, dtype="float64")
    df["peers"] = pd.Series([v.peers for v in verdicts], index=df.index, dtype="int64")
    df["ratio"] = pd.Series([v.ratio for v in verdicts], index=df.index, dtype="float64")
    df["straggler"] = pd.Series([v.straggler for v in verdicts], index=df.index, dtype="bool")
    df["severity"] = pd.Series([v.severity for v in verdicts], index=df.index, dtype="object")
    df["robust_z"] = pd.Series([v.z for v in verdicts], index=df.index, dtype="float64")
    return df


def flatten(prefix: str, values: Any) -> dict[str, Any]:
    """A JSON object as flat ``prefix_key`` columns (nested keys joined with dots)."""
    out: dict[str, Any] = {}
    if not isinstance(values, dict):
        return out
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flatten(f"{prefix}_{k}", v))
        else:
            out[f"{prefix}_{k}"] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
    return out
