"""Benchmarks: results per workload by node and GPU model, distributions against the fleet median,
stragglers with their evidence, trends, MFU and the environment behind each result."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from dashboard import definitions as d

MIN_LOOKBACK_SECONDS = 7 * 86400
CAPTION = ("Results of the benchmark runs the agents schedule on idle GPUs (and `gpufleet bench run`). Benchmarks "
           "run nightly or when nodes are idle, so this page covers at least the last 7 days, whatever the range.")
MAX_EVIDENCE = 50
RUN_CHOICES = 200  # runs offered in the environment picker, newest first


def summary(results: pd.DataFrame, by: str) -> pd.DataFrame:
    """Results per workload and metric, by ``by`` (gpu_model or node)."""
    ok = results[results["status"] == "ok"]
    g = ok.groupby(["workload", "metric", "unit", by], dropna=False)
    return g.agg(results=("value", "size"), median=("value", "median"), min=("value", "min"), max=("value", "max"),
                 stragglers=("straggler", "sum")).reset_index()


def evidence(view: ui.View, slow: pd.DataFrame) -> pd.DataFrame:
    """Stragglers with what their GPU went through during the run."""
    slow = slow.head(MAX_EVIDENCE)
    spans = tuple(dict.fromkeys((int(g), float(s), float(f if pd.notna(f) else s)) for g, s, f in
                                zip(slow["gpu_id"], slow["started_at"], slow["finished_at"], strict=True)
                                if pd.notna(g)))
    cond = data.run_conditions(view.url, spans).drop_duplicates(["gpu_id", "start"])
    merged = slow.merge(cond, left_on=["gpu_id", "started_at"], right_on=["gpu_id", "start"], how="left")
    return pd.DataFrame({
        "GPU": merged["label"], "workload": merged["workload"], "metric": merged["metric"], "value": merged["value"],
        "unit": merged["unit"], "fleet median": merged["fleet_median"], "of median": merged["ratio"],
        "robust z": merged["robust_z"],
        "run start": merged["time"], "throttled (% samples)": merged["throttled_ratio"] * 100,
        "thermal (%)": merged["thermal_ratio"] * 100, "power cap (%)": merged["power_capped_ratio"] * 100,
        "max temperature (°C)": merged["temperature_max_celsius"], "SM clock (MHz)": merged["sm_clock_avg_hz"] / 1e6,
        "samples": merged["samples"],
    })


def stragglers(view: ui.View, results: pd.DataFrame) -> None:
    st.subheader("Stragglers")
    st.caption(d.STRAGGLER_CAPTION)
    slow = results[results["straggler"]].sort_values("ratio")
    if not len(slow):
        ui.nothing("No straggler in this range.")
        return
    st.dataframe(evidence(view, slow), hide_index=True, column_config={
        "of median": st.column_config.NumberColumn(format="percent"),
        **{c: st.column_config.NumberColumn(format="%.0f") for c in ("throttled (% samples)", "thermal (%)",
                                                                      "power cap (%)", "SM clock (MHz)")}})
    for (label, workload, metric), _ in slow.groupby(["label", "workload", "metric"], sort=False):
        with st.expander(f"History: {label}, {workload} {metric}"):
            mine = results[(results["label"] == label) & (results["workload"] == workload)
                           & (results["metric"] == metric)]
            st.plotly_chart(charts.bench_trend(mine), key=f"history-{label}-{workload}-{metric}")


def main() -> None:
    view = ui.page_start("Benchmarks", CAPTION)
    if view is None:
        return
    start = min(view.start, view.end - MIN_LOOKBACK_SECONDS)
    results = data.bench_results(view.url, view.scope, start, view.end)
    st.caption(f"Benchmark runs started {ui.when(start)} to {ui.when(view.end)}.")
    if not len(results):
        ui.nothing("No benchmark results in the last 7 days (or the range). The agent runs benchmarks when a node "
                   "is idle; "
                   "`gpufleet bench run --db URL` runs them by hand.")
        return
    simulated = results.get("env_simulated", pd.Series(dtype=object)).fillna(False).astype(bool)
    if simulated.any():
        st.info(f"{int(simulated.sum())} of these results are **simulated** (environment `simulated: true`): one real "
                "run on the machine that made them, scaled per simulated GPU by its speed in the demo's scenario "
                "(`simulated_speed_factor`). The values are the real run's, not a GPU's.", icon=":material/science:")
    st.subheader("Results by workload, GPU model and node")
    st.dataframe(summary(results, "gpu_model"), hide_index=True)
    with st.expander("By node"):
        st.dataframe(summary(results, "node"), hide_index=True)
    pairs = sorted({(w, m) for w, m in zip(results["workload"], results["metric"], strict=True)})
    pick = st.selectbox("Workload and metric", pairs, format_func=lambda p: f"{p[0]}: {p[1]}", key="bench_pair")
    chosen = results[(results["workload"] == pick[0]) & (results["metric"] == pick[1]) & (results["status"] == "ok")]
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.bench_distribution(chosen), key="distribution")
    with right:
        st.plotly_chart(charts.bench_trend(chosen), key="trend")
    stragglers(view, results)

    st.subheader("MFU")
    mfu = results[(results["metric"] == "mfu") & (results["status"] == "ok")]
    if len(mfu):
        st.plotly_chart(charts.mfu(mfu), key="mfu")
    else:
        ui.nothing("No MFU results (metric `mfu`) in this range.")

    st.subheader("Environment")
    env_cols = sorted(c for c in results.columns if c.startswith("env_"))
    st.dataframe(results[["time", "label", "workload", "suite", "device", "status", "metric", "value", "unit",
                          *env_cols]].sort_values("time", ascending=False), hide_index=True)
    # The latest runs only, labelled once: a week of a large fleet is thousands of runs, and a
    # label looked up per option made this page take seconds.
    runs = results.drop_duplicates("run_id").sort_values("time", ascending=False).head(RUN_CHOICES)
    labels = {r.run_id: f"{ui.when(r.started_at)} · {r.label} · {r.workload} ({r.suite})"
              for r in runs.itertuples(index=False)}
    run = st.selectbox(f"Run (latest {len(labels)})", list(labels), key="bench_run", format_func=labels.__getitem__)
    row = runs[runs["run_id"] == run].iloc[0]
    left, right = st.columns(2)
    left.markdown("**Environment**")
    left.json(row["environment"] or {})
    right.markdown("**Configuration**")
    right.json(row["config"] or {})


main()
