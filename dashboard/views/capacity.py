"""Capacity: demand against capacity with the forecast and its prediction interval, how well the model
forecast the past (backtest against the seasonal-naive baseline), when to add GPUs and how many, and
what-if simulations of the fleet (queue and placement policies, added GPUs of a model)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from db.readmodels import Scope
from planner.placement import POLICIES
from planner.simulate import QUEUE_POLICIES

CAPTION = (
    "Demand is what users asked for: running + pending GPUs of the jobs table (`gpufleet import jobs`), or, "
    "without jobs, the GPUs allocated according to telemetry (a lower bound: a queue is invisible to NVML). "
    "The forecast reads the last 28 days, whatever the range; `gpufleet plan forecast --db URL` prints the same."
)
HORIZONS = (7, 14, 28)
BACKTESTS = (1, 7)
WHATIF_KEY = "whatif_params"


def _dur(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "n/a"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.0f} s"


def run_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """The simulated fleets side by side: queueing delay percentiles, JCT, allocation."""
    return pd.DataFrame({
        "fleet": [r["fleet"] for r in runs], "jobs": [r["jobs"] for r in runs],
        "unplaceable": [r["unplaceable"] for r in runs],
        "queueing p50": [_dur(r["queue_delay_p50_s"]) for r in runs],
        "queueing p90": [_dur(r["queue_delay_p90_s"]) for r in runs],
        "queueing p99": [_dur(r["queue_delay_p99_s"]) for r in runs],
        "JCT mean": [_dur(r["jct_mean_s"]) for r in runs],
        "GPUs allocated": [r["mean_allocation_ratio"] for r in runs],
        "fragmentation": [r["mean_fragmentation_ratio"] for r in runs],
    })


def search_sentence(search: dict[str, Any]) -> str:
    target = _dur(search["target_p90_s"])
    if search["added_nodes"] is None:
        return (f"Even 64 more nodes of {search['model']} leave the p90 queueing delay above {target}: the queue is "
                "not short of GPUs of this model (jobs too large for a node, or another model is the bottleneck).")
    if search["added_nodes"] == 0:
        return f"The fleet as it is keeps the p90 queueing delay under {target}: nothing to add."
    return (f"Add {search['added_gpus']} GPUs of {search['model']} ({search['added_nodes']} nodes of "
            f"{search['gpus_per_node']}) to keep the p90 queueing delay under {target}.")


def forecast_section(view: ui.View) -> None:
    st.subheader("Demand, capacity and the forecast")
    c1, c2, c3 = st.columns(3)
    horizon = c1.selectbox("Forecast horizon", HORIZONS, index=1, format_func=lambda d: f"{d} days",
                           key="cap_horizon")
    target = c2.slider("Target allocation", 0.5, 1.0, 0.8, 0.05, key="cap_target")
    bt_days = c3.selectbox("Backtest horizon", BACKTESTS, index=0, format_func=lambda d: f"{d} day{'s' * (d > 1)}",
                           key="cap_backtest")
    usage, outlook = data.capacity_outlook(view.url, view.now, horizon * 24, target, bt_days * 24)
    if isinstance(outlook, str):
        st.info(f"No forecast: {outlook}. It needs two days of hourly demand; `gpufleet import jobs FILE` adds a "
                "job log, and the agents' telemetry accumulates as they run.", icon=":material/info:")
        if usage is not None:  # the history there is, without a forecast
            st.plotly_chart(charts.forecast_fan(usage.frame, pd.DataFrame(columns=["mean", "lower", "upper"]),
                                                pd.Series(dtype=float), target, 0.9, usage.unit), key="capacity_fan")
        return
    answer, fc = outlook.answer, outlook.forecast
    st.success(answer.sentence(), icon=":material/shopping_cart:")
    cols = st.columns(5)
    cols[0].metric("Capacity (latest)", f"{outlook.latest_capacity:,.0f} {outlook.usage.unit}")
    cols[1].metric("Usable × target", f"{answer.threshold:,.0f} {outlook.usage.unit}")
    cols[2].metric(f"Peak p{round(answer.quantile * 100)} demand", f"{answer.peak_upper:,.0f} {outlook.usage.unit}")
    cols[3].metric("Exceeds on", f"{answer.exceeds_at:%Y-%m-%d}" if answer.exceeds_at is not None else "never")
    cols[4].metric("Add", f"{answer.add:,} {outlook.usage.unit}", help=f"of {answer.model}" if answer.model else None)
    st.plotly_chart(charts.forecast_fan(outlook.usage.frame, fc.frame, outlook.usable, target, fc.level,
                                        outlook.usage.unit), key="capacity_fan")
    st.caption(f"Demand: {outlook.usage.definition}. Model: {fc.model}; the band is its {fc.level:.0%} prediction "
               "interval. Usable capacity is the latest capacity less the GPUs the controller judges unhealthy.")
    backtest_section(outlook, bt_days, horizon, target)


def backtest_section(outlook: Any, bt_days: int, horizon: int, target: float) -> None:
    st.subheader("Backtest")
    bt = outlook.backtest
    if bt is None:
        st.info(f"Not enough history to backtest a {bt_days}-day horizon ({outlook.backtest_note}). A fold needs "
                "two weeks of history before it, or all but the horizon when there is less.", icon=":material/info:")
    else:
        cols = st.columns(4)
        cols[0].metric("sMAPE, model", f"{bt.model_smape:.1%}")
        cols[1].metric("sMAPE, seasonal naive", f"{bt.baseline_smape:.1%}",
                       help="The same hour of last week (or yesterday): the baseline the model must beat.")
        cols[2].metric("MAE, model vs naive", f"{bt.model_mae:,.1f} vs {bt.baseline_mae:,.1f}")
        cols[3].metric("Interval coverage", f"{bt.coverage:.0%}", help="Share of actual hours inside the interval.")
        st.dataframe(bt.folds, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="percent") for c in ("model_smape", "baseline_smape", "coverage")})
    st.caption(f"The same as `gpufleet plan forecast --db URL --horizon-days {horizon} --target {target:g} "
               f"--backtest-days {bt_days}`.")


def whatif_section(view: ui.View) -> None:
    st.subheader("What if")
    models = sorted(data.inventory(view.url, Scope())["model"].dropna().unique())
    with st.form("whatif"):
        c1, c2, c3, c4, c5 = st.columns(5)
        queue = c1.selectbox("Queue policy", QUEUE_POLICIES, key="whatif_queue")
        placement = c2.selectbox("Placement policy", POLICIES, index=POLICIES.index("fgd"), key="whatif_placement")
        model = c3.selectbox("Add GPUs of model", models, key="whatif_model")
        add = c4.number_input("GPUs to add", min_value=0, max_value=1024, value=8, step=8, key="whatif_add")
        p90 = c5.number_input("Target p90 queueing (min, 0: none)", min_value=0, value=30, step=5, key="whatif_p90")
        if st.form_submit_button("Run what-if", icon=":material/play_arrow:", key="whatif_run"):
            st.session_state[WHATIF_KEY] = (queue, placement, model, int(add), float(p90) * 60 if p90 else None)
    params = st.session_state.get(WHATIF_KEY)
    if params is None:
        ui.nothing("Choose the policies and the GPUs to add, then run: the simulator replays the store's jobs of the "
                   "last 7 days (or a synthetic trace sized to the fleet) on the fleet as it is and with the GPUs "
                   "added.")
        return
    with st.spinner("Simulating …"):
        result = data.whatif(view.url, view.now, *params)
    st.caption(f"Trace: {result['trace']}. Queue {params[0]}, placement {params[1]}.")
    st.dataframe(run_table(result["runs"]), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="percent") for c in ("GPUs allocated", "fragmentation")})
    if "search" in result:
        st.success(search_sentence(result["search"]), icon=":material/add_circle:")
    st.plotly_chart(charts.whatif_allocation(result["series"]), key="whatif_chart")
    st.caption("The same simulator as `gpufleet plan simulate --trace FILE --cluster FILE --queue Q --placement P "
               "--add-model M --target-p90 S`, here over the store's fleet and jobs.")


def main() -> None:
    view = ui.page_start("Capacity", CAPTION)
    if view is None:
        return
    forecast_section(view)
    whatif_section(view)


main()
