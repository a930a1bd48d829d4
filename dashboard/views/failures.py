"""Failures: event timeline, breakdown by category (count and GPU-hours lost), XIDs with their
meaning and action, MTBF per component, failures per node and day."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from collectors.xid import classify
from dashboard import analysis, charts, data, ui
from dashboard import definitions as d

CAPTION = (
    "Events the agents recorded (XIDs, ECC, thermal and power throttling, lost GPUs, NVML errors). "
    "A **failure** is a fatal event; fatal events on one GPU during one outage (XID 79 then `gpu_lost`) "
    "count as one failure."
)


def breakdown(summary: pd.DataFrame, lost: pd.DataFrame, down_hours: float) -> pd.DataFrame:
    """Per category: warning and critical events, and GPU-hours lost (plus down time with no fatal event)."""
    serious = summary[summary["severity"].isin(["warning", "critical"])]
    counts = serious.groupby(serious["category"].fillna("other"))["count"].sum()
    lost_by = (lost.groupby(lost["category"].fillna("other"))["lost_hours"].sum() if len(lost)
               else pd.Series(dtype="float64"))
    out = pd.DataFrame({"count": counts, "lost_hours": lost_by}).fillna(0.0)
    rest = max(0.0, down_hours - float(lost_by.sum()))
    if rest > 0:
        out.loc["down, no fatal event"] = {"count": 0, "lost_hours": rest}
    return out.rename_axis("category").reset_index().sort_values("lost_hours", ascending=False)


def xid_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The XIDs seen, with the catalogue's meaning, fatality and recommended action."""
    xids = summary[summary["kind"] == "xid"]
    if not len(xids):
        return pd.DataFrame()
    grouped = xids.groupby("code").agg(count=("count", "sum"), nodes=("node", lambda n: ", ".join(sorted(set(n)))))
    rows = []
    for code, g in grouped.iterrows():
        info = classify(int(code)) if str(code).isdigit() else None
        rows.append({"XID": code, "count": int(g["count"]), "mnemonic": info.mnemonic if info else None,
                     "fatal": info.fatal if info else None, "category": info.category if info else None,
                     "recommended action": info.recommended_action if info else None, "nodes": g["nodes"]})
    return pd.DataFrame(rows).sort_values("count", ascending=False)


def main() -> None:
    view = ui.page_start("Failures", CAPTION)
    if view is None:
        return
    summary = data.event_summary(view.url, view.scope, view.start, view.end)
    events = data.events(view.url, view.scope, view.start, view.end)
    lost = data.outages(view.url, view.scope, view.start, view.end)
    inventory = data.inventory(view.url, view.scope)
    frame, _source, _step = data.state_series(view.url, view.scope, view.start, view.end)
    failed = analysis.failures(summary, lost, inventory)

    st.subheader("Timeline")
    if len(events):
        st.plotly_chart(charts.event_timeline(events, (view.start, view.end)), key="timeline")
        if len(events) >= d.EVENT_TIMELINE_LIMIT:
            st.caption(f"The newest {d.EVENT_TIMELINE_LIMIT} events; narrow the range or filter to see older ones.")
    else:
        ui.nothing("No events in this range.")

    st.subheader("By category")
    cats = breakdown(summary, lost, analysis.state_hours(frame)["down"])
    if len(cats):
        st.plotly_chart(charts.failure_breakdown(cats), key="breakdown")
    st.caption(d.LOST_CAPTION)

    st.subheader("XIDs")
    xids = xid_table(summary)
    if len(xids):
        st.dataframe(xids, hide_index=True)
    else:
        ui.nothing("No XID in this range.")

    st.subheader("Mean time between failures")
    per_component, per_node = analysis.mtbf(data.gpu_hours(view.url, view.scope, view.start, view.end), inventory,
                                            failed, view.start, view.end)
    cols = st.columns(3)
    for col, row in zip(cols, per_component.itertuples(index=False), strict=True):
        col.metric(f"MTBF, {row.component}", ui.hours(row.mtbf_hours) if row.failures else "no failure",
                   help=f"{row.observed_hours:,.1f} h observed, {row.failures} failures")
    st.caption(d.MTBF_CAPTION)
    with st.expander("Per node"):
        st.dataframe(per_node.sort_values("failures", ascending=False), hide_index=True)

    st.subheader("Failures per node and day")
    if len(failed):
        days = failed.assign(day=analysis.to_time(failed["day"]).dt.date)
        st.plotly_chart(charts.failure_heatmap(days.groupby(["node", "day"]).size().rename("failures").reset_index()),
                        key="failure_heatmap")
    else:
        ui.nothing("No failure (fatal event) in this range.")


main()
