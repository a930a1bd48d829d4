"""Fleet overview: the fleet now (live), utilization over the range, idle GPU-hours, top problems."""

from __future__ import annotations

import streamlit as st

from dashboard import analysis, charts, data, ui
from dashboard import definitions as d

MAX_PROBLEMS = 20
PROBLEM_ICONS = {0: ":material/error:", 1: ":material/power_off:", 2: ":material/memory:", 3: ":material/thermostat:"}


@st.fragment(run_every=d.LIVE_REFRESH_SECONDS)
def live(view: ui.View) -> None:
    """Headline numbers and current problems, refreshed on their own every few seconds."""
    at = data.now() if view.filters.range != "custom" else view.end
    current, unresolved = data.current_state(view.url, view.scope, view.start, at)
    h = analysis.headline(current)
    row1, row2 = st.columns(5), st.columns(5)
    row1[0].metric("GPUs", h["gpus"])
    row1[1].metric("Busy", h["busy"])
    row1[2].metric("Idle", h["idle"], help="Idle GPUs, including idle-allocated ones.")
    row1[3].metric("Idle, allocated", h["idle_allocated"], help="A process holds the GPU but it is below "
                   f"{d.BUSY_UTILIZATION:.0%} utilization.")
    row1[4].metric("Down", h["down"])
    row2[0].metric("Throttled", h["throttled"])
    row2[1].metric("Unhealthy", h["unhealthy"])
    row2[2].metric("Fleet utilization", ui.percent(h["utilization"]), help="Mean utilization of GPUs that are up.")
    row2[3].metric("Power", ui.watts(h["power_watts"]), help="Sum of the power draw of GPUs that are up.")
    st.caption(f"Live: as of {ui.when(at)}, refreshed every {d.LIVE_REFRESH_SECONDS} s.")

    st.subheader("Top problems now")
    found = analysis.problems(current, unresolved)
    if not len(found):
        ui.nothing("No fatal events, lost GPUs, ECC errors or throttling right now.")
        return
    for p in found.head(MAX_PROBLEMS).itertuples(index=False):
        gpu = "" if p.gpu is None or p.gpu != p.gpu else f" / GPU {int(p.gpu)}"
        text, link = st.columns([5, 1], vertical_alignment="center")
        text.markdown(f"{PROBLEM_ICONS.get(int(p.rank), '')} **{p.problem}** on **{p.node}{gpu}**: {p.detail}"
                      + (f"  \n*{p.action}*" if isinstance(p.action, str) else ""))
        with link:
            ui.node_link(view, p.node, "Node page", gpu=p.gpu)
    if len(found) > MAX_PROBLEMS:
        st.caption(f"… and {len(found) - MAX_PROBLEMS} more; filter by cluster or node to see them.")


def utilization(view: ui.View) -> None:
    frame, source, step = data.state_series(view.url, view.scope, view.start, view.end)
    hours = analysis.state_hours(frame)
    st.subheader("GPU-hours in the range")
    cols = st.columns(5)
    cols[0].metric("Busy GPU-hours", ui.hours(hours["busy"]))
    cols[1].metric("Idle GPU-hours", ui.hours(hours["idle"] + hours["idle-allocated"]),
                   help="Idle and idle-allocated together.")
    cols[2].metric("Idle-allocated GPU-hours", ui.hours(hours["idle-allocated"]))
    cols[3].metric("Down GPU-hours", ui.hours(hours["down"]))
    cols[4].metric("Throttled GPU-hours", ui.hours(hours["throttled"]))
    st.caption(f"{d.HOURS_CAPTION} {d.SOURCE_CAPTION} This view: {source}, {step // 60}-minute buckets.")
    if not len(frame):
        ui.nothing("No GPU samples in this range.")
        return
    st.plotly_chart(charts.state_area(frame), key="state_area")
    matrix, total = data.utilization_matrix(view.url, view.scope, view.start, view.end)
    if len(matrix):
        st.plotly_chart(charts.utilization_heatmap(matrix), key="heatmap")
    if total > d.HEATMAP_MAX_GPUS:
        st.caption(f"The heatmap shows the first {d.HEATMAP_MAX_GPUS} of {total} GPUs by node; "
                   "filter by cluster, node or model to see others.")


def main() -> None:
    view = ui.page_start("Fleet overview", d.STATE_CAPTION)
    if view is None:
        return
    live(view)
    utilization(view)


main()
