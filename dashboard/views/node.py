"""Node and GPU detail: every metric on one time axis with events and throttling, network and
storage, the GPUs' processes and benchmark history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import analysis, charts, data, filters, ui
from dashboard import definitions as d
from db.readmodels import RAW, SAMPLED_FROM_SECONDS, SAMPLED_SHARE, Scope, bucket_for

ALL = "all"
BENCH_HISTORY_SECONDS = 30 * 86400
CAPTION = (
    "Pick a node in the sidebar or below; the node, the GPU and the range are in the URL, so the view "
    "can be shared. Events are markers on the top panel (vertical lines for fatal and critical ones); "
    "orange bands are times when a shown GPU had a throttling clock-event reason, grey ones times when it "
    "reported a non-ok status."
)


def _pick_node() -> None:
    filters.set_nodes([st.session_state["node_pick"]])


def _pick_gpu() -> None:
    choice = st.session_state["gpu_pick"]
    if choice == ALL:
        if "gpu" in st.query_params:
            del st.query_params["gpu"]
    else:
        st.query_params["gpu"] = str(choice)


@st.fragment(run_every=d.LIVE_REFRESH_SECONDS)
def live(view: ui.View, node: str, gpu_ids: tuple[int, ...]) -> None:
    """The node's GPUs now: state, utilization, temperature, power, and their processes."""
    at = data.now() if view.filters.range != "custom" else view.end
    current, _ = data.current_state(view.url, Scope(nodes=(node,)), view.start, at)
    current = current[current["gpu_id"].isin(gpu_ids)]
    table = pd.DataFrame({
        "GPU": current["index"], "model": current["model"], "state": current["state"],
        "throttled": current["throttled"], "unhealthy": current["unhealthy"],
        "utilization (%)": current["utilization_gpu_ratio"] * 100,
        "temperature (°C)": current["temperature_gpu_celsius"],
        "power (W)": current["power_watts"], "power limit (W)": current["power_limit_watts"],
        "reasons": current["reasons"], "last sample": [ui.when(t) for t in current["ts"]],
    })
    st.dataframe(table, hide_index=True, column_config={
        "utilization (%)": st.column_config.NumberColumn(format="%.0f"),
        "power (W)": st.column_config.NumberColumn(format="%.0f")})
    st.caption(f"Live: as of {ui.when(at)}. {d.STATE_CAPTION}")
    procs = data.processes(view.url, gpu_ids, at)
    # Processes of the GPU's newest sample; for a GPU that is down, the last ones seen before it went.
    newest = current.set_index("gpu_id")["ts"]
    down = set(current.loc[current["down"], "gpu_id"])
    procs = procs[[g in down or (pd.notna(newest.get(g)) and t >= newest.get(g))
                   for g, t in zip(procs["gpu_id"], procs["ts"], strict=True)]]
    st.markdown("**Processes** (now; for a GPU that is down, the last seen)")
    if not len(procs):
        ui.nothing("No processes reported on these GPUs.")
        return
    index = current.set_index("gpu_id")["index"]
    st.dataframe(pd.DataFrame({"GPU": procs["gpu_id"].map(index), "pid": procs["pid"], "name": procs["name"],
                               "GPU memory (GiB)": procs["used_memory_bytes"] / 2**30, "MIG": procs["mig_instance"],
                               "seen": [ui.when(t) for t in procs["ts"]]}),
                 hide_index=True, column_config={"GPU memory (GiB)": st.column_config.NumberColumn(format="%.1f")})


def metrics(view: ui.View, node_id: int, gpus: pd.DataFrame) -> None:
    series, source = data.gpu_series(view.url, tuple(int(g) for g in gpus["gpu_id"]), view.start, view.end)
    if not len(series):
        ui.nothing("No GPU samples for this selection in the range.")
        return
    series = series.merge(gpus[["gpu_id", "index"]].rename(columns={"index": "gpu_index"}), on="gpu_id")
    events = data.events(view.url, Scope(), view.start, view.end, node_id)
    events = events[events["gpu_id"].isin(gpus["gpu_id"]) | events["gpu_id"].isna()]
    step = float(series["ts"].sort_values().diff().loc[lambda s: s > 0].median()) if source == "raw" else (
        60.0 if source == "1m" else 3600.0)
    step = step if step == step else 60.0  # NaN: a single sample
    bands, down = analysis.throttle_bands(series, step), analysis.down_bands(series, step)
    st.plotly_chart(charts.gpu_metrics(series, source, events, bands, down), key="gpu_metrics")
    st.caption(f"Source: {source}. {d.SOURCE_CAPTION}")
    shaded = pd.concat([b for b in (bands, down) if len(b)]) if len(bands) or len(down) else bands
    if len(shaded):
        with st.expander(f"Throttled and down intervals ({len(shaded)})"):
            st.dataframe(shaded.assign(start=analysis.to_time(shaded["start"]), end=analysis.to_time(shaded["end"])),
                         hide_index=True)
    if len(events):
        with st.expander(f"Events ({len(events)})"):
            st.dataframe(events[["time", "kind", "code", "severity", "category", "gpu_index", "message",
                                 "recommended_action"]], hide_index=True)


def host(view: ui.View, node_id: int) -> None:
    left, right = st.columns(2)
    with left:
        net = data.interfaces(view.url, node_id, view.start, view.end)
        if len(net):
            st.plotly_chart(charts.network(net), key="network")
        else:
            ui.nothing("No network samples for this node in the range.")
    with right:
        disks = data.disks(view.url, node_id, view.start, view.end)
        fs = data.filesystems(view.url, node_id, view.start, view.end)
        if len(disks) or len(fs):
            st.plotly_chart(charts.storage(disks, fs), key="storage")
        else:
            ui.nothing("No storage samples for this node in the range.")


def benchmarks(view: ui.View, node_id: int, gpu_id: int | None) -> None:
    start = min(view.start, view.end - BENCH_HISTORY_SECONDS)
    results = data.bench_results(view.url, Scope(), start, view.end, node_id=node_id, gpu_id=gpu_id)
    st.subheader("Benchmark history")
    st.caption(f"The last 30 days (or the range, if longer). {d.STRAGGLER_CAPTION}")
    if not len(results):
        ui.nothing("No benchmark results for this node. Benchmarks run when the node is idle "
                   "(`gpufleet bench run` runs them by hand).")
        return
    pairs = sorted({(w, m) for w, m in zip(results["workload"], results["metric"], strict=True)})
    pick = st.selectbox("Workload and metric", pairs, format_func=lambda p: f"{p[0]}: {p[1]}", key="bench_pick")
    chosen = results[(results["workload"] == pick[0]) & (results["metric"] == pick[1])]
    st.plotly_chart(charts.bench_trend(chosen), key="bench_trend")
    st.dataframe(results[["time", "label", "workload", "suite", "metric", "value", "unit", "fleet_median", "ratio",
                          "straggler", "status"]].sort_values("time", ascending=False), hide_index=True)


def main() -> None:
    view = ui.page_start("Node and GPU detail", CAPTION)
    if view is None:
        return
    inv = data.inventory(view.url, Scope(view.scope.clusters, (), view.scope.models))
    nodes = sorted(inv["node"].dropna().unique())
    if not nodes:
        ui.nothing("No node matches the filters.")
        return
    wanted = [n for n in view.filters.nodes if n in nodes]
    st.session_state["node_pick"] = wanted[0] if wanted else nodes[0]
    left, right = st.columns(2)
    node = left.selectbox("Node", nodes, key="node_pick", on_change=_pick_node)
    gpus = inv[inv["node"] == node]
    options: list[object] = [ALL, *sorted(int(i) for i in gpus["index"].dropna())]
    if "gpu_pick" not in st.session_state:
        url_gpu = st.query_params.get("gpu")
        st.session_state["gpu_pick"] = int(url_gpu) if url_gpu and url_gpu.isdigit() else ALL
    if st.session_state["gpu_pick"] not in options:
        st.session_state["gpu_pick"] = ALL
    gpu = right.selectbox("GPU", options, key="gpu_pick", on_change=_pick_gpu,
                          format_func=lambda g: "All GPUs" if g == ALL else f"GPU {g}")
    shown = gpus if gpu == ALL else gpus[gpus["index"] == gpu]
    node_id = int(gpus["node_id"].iloc[0])
    cluster = gpus["cluster"].iloc[0]
    st.markdown(f"**{node}** · cluster {cluster if isinstance(cluster, str) else 'n/a'} · {len(gpus)} GPUs · "
                f"{', '.join(sorted(gpus['model'].dropna().unique())) or 'model unknown'}")
    live(view, node, tuple(int(g) for g in shown["gpu_id"]))
    st.subheader("Metrics")
    metrics(view, node_id, shown)
    st.subheader("Network and storage")
    if bucket_for(view.end - view.start, RAW) >= SAMPLED_FROM_SECONDS:
        st.caption(f"Over this range each point summarises the samples of the first {SAMPLED_SHARE:.0%} of its "
                   "bucket (network and storage have no rollups yet).")
    host(view, node_id)
    benchmarks(view, node_id, None if gpu == ALL else int(shown["gpu_id"].iloc[0]))


main()
