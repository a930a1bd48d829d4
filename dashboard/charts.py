"""Plotly figure builders: pure functions from data frames to figures, with units on the axes,
one colour per state and per event category, and hover text that says what a point is."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

STATE_COLORS = {
    "busy": "#2e7d32",
    "idle-allocated": "#f9a825",
    "idle": "#90a4ae",
    "throttled": "#ef6c00",
    "unhealthy": "#c62828",
    "down": "#37474f",
}
CATEGORY_COLORS = {
    "gpu-hardware": "#c62828", "interconnect": "#6a1b9a", "host": "#1565c0", "user/app": "#f9a825",
    "framework": "#00838f", "maintenance": "#558b2f", "cancelled": "#8d6e63", "timeout": "#ef6c00",
    "down, no fatal event": STATE_COLORS["down"], "other": "#9e9e9e",
}
SEVERITY_SYMBOLS = {"critical": "x", "warning": "triangle-up", "info": "circle"}
GPU_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf")
STRAGGLER_COLOR = "#d50000"
TIME_AXIS = "time (UTC)"


def category_color(category: object) -> str:
    other = CATEGORY_COLORS["other"]
    return CATEGORY_COLORS.get(str(category), other) if pd.notna(category) else other


def _time(value: object) -> object:
    """Epoch seconds as a UTC timestamp (the time axes are datetimes); timestamps pass through."""
    return pd.to_datetime(value, unit="s", utc=True) if isinstance(value, numbers.Real) else value


def _layout(fig: go.Figure, height: int = 360) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hovermode="closest")
    return fig


# -- fleet --------------------------------------------------------------------------------------


def state_area(frame: pd.DataFrame) -> go.Figure:
    """Stacked GPUs per state over time, with throttled GPUs as a line on top.
    ``frame``: time, busy, idle-allocated, idle, down, throttled (GPU counts)."""
    fig = go.Figure()
    for state in ("busy", "idle-allocated", "idle", "down"):
        fig.add_trace(go.Scatter(x=frame["time"], y=frame[state], name=state, stackgroup="states", mode="lines",
                                 line={"width": 0.5, "color": STATE_COLORS[state]},
                                 hovertemplate=f"{state}: %{{y:.1f}} GPUs<extra></extra>"))
    fig.add_trace(go.Scatter(x=frame["time"], y=frame["throttled"], name="throttled", mode="lines",
                             line={"color": STATE_COLORS["throttled"], "dash": "dot", "width": 2},
                             hovertemplate="throttled: %{y:.1f} GPUs<extra></extra>"))
    fig.update_layout(title="GPUs by state", hovermode="x unified")
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="GPUs (count, mean over bucket)", rangemode="tozero")
    return _layout(fig)


def utilization_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """GPUs (rows, grouped by node) x time, coloured by mean utilization.
    ``matrix``: label, node, index, time, utilization (0-1)."""
    order = matrix.drop_duplicates("label").sort_values(["node", "index"])["label"].tolist()
    pivot = matrix.pivot_table(index="label", columns="time", values="utilization", aggfunc="mean")
    pivot = pivot.reindex(order) * 100
    fig = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=list(pivot.columns), y=order, zmin=0, zmax=100,
                               colorscale="Viridis", colorbar={"title": {"text": "utilization (%)"}},
                               hovertemplate="%{y}<br>%{x}<br>utilization %{z:.0f}%<extra></extra>"))
    fig.update_layout(title="GPU utilization")
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="GPU (node / index)", autorange="reversed")
    return _layout(fig, height=max(300, 18 * len(order) + 120))


# -- one node -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Panel:
    title: str  # with its unit, used as the y-axis title
    columns: tuple[tuple[str, str, float, str], ...]  # (column, name, scale, dash)


RAW_PANELS = (
    Panel("utilization (%)", (("utilization_gpu_ratio", "utilization", 100, "solid"),
                              ("utilization_memory_ratio", "memory utilization", 100, "dot"))),
    Panel("memory used (GiB)", (("memory_used_bytes", "memory used", 1 / 2**30, "solid"),)),
    Panel("temperature (°C)", (("temperature_gpu_celsius", "temperature", 1, "solid"),
                               ("temperature_memory_celsius", "memory temperature", 1, "dot"))),
    Panel("power (W)", (("power_watts", "power", 1, "solid"), ("power_limit_watts", "power limit", 1, "dash"))),
    Panel("clocks (MHz)", (("sm_clock_hz", "SM clock", 1e-6, "solid"), ("mem_clock_hz", "memory clock", 1e-6, "dot"))),
    Panel("PCIe / NVLink (MB/s)", (("pcie_tx_bytes_per_second", "PCIe tx", 1e-6, "solid"),
                                   ("pcie_rx_bytes_per_second", "PCIe rx", 1e-6, "dot"),
                                   ("nvlink_tx_bytes_per_second", "NVLink tx", 1e-6, "dash"),
                                   ("nvlink_rx_bytes_per_second", "NVLink rx", 1e-6, "dashdot"))),
    Panel("errors (count)", (("ecc_corrected_volatile_total", "ECC corrected", 1, "solid"),
                             ("ecc_uncorrected_volatile_total", "ECC uncorrected", 1, "dash"),
                             ("pcie_replay_total", "PCIe replays", 1, "dot"),
                             ("nvlink_errors_total", "NVLink errors", 1, "dashdot"))),
)
ROLLUP_PANELS = (
    Panel("utilization (%)", (("utilization_avg", "utilization", 100, "solid"),
                              ("utilization_max", "max utilization", 100, "dot"))),
    Panel("memory used (GiB)", (("memory_used_avg_bytes", "memory used", 1 / 2**30, "solid"),)),
    Panel("temperature (°C)", (("temperature_avg_celsius", "temperature", 1, "solid"),
                               ("temperature_max_celsius", "max temperature", 1, "dot"))),
    Panel("power (W)", (("power_avg_watts", "power", 1, "solid"), ("power_limit_watts", "power limit", 1, "dash"))),
    Panel("SM clock (MHz)", (("sm_clock_avg_hz", "SM clock", 1e-6, "solid"),)),
    Panel("throttled (% of samples)", (("throttled_ratio", "throttled", 100, "solid"),
                                       ("thermal_ratio", "thermal", 100, "dot"),
                                       ("power_capped_ratio", "power capped", 100, "dash"))),
    Panel("errors (count)", (("ecc_corrected_max", "ECC corrected", 1, "solid"),
                             ("ecc_uncorrected_max", "ECC uncorrected", 1, "dash"),
                             ("pcie_replay_max", "PCIe replays", 1, "dot"),
                             ("nvlink_errors_max", "NVLink errors", 1, "dashdot"))),
)


def gpu_metrics(series: pd.DataFrame, source: str, events: pd.DataFrame | None = None,
                bands: pd.DataFrame | None = None, down: pd.DataFrame | None = None) -> go.Figure:
    """Every metric of the node's GPUs on one shared time axis, one colour per GPU.

    ``series``: time, gpu_index and the metric columns (raw samples or rollups, per ``source``);
    ``events``: time, kind, code, severity, category, message, gpu_index, fatal (markers on the top
    panel, vertical lines for fatal and critical ones); ``bands``: start, end (epoch seconds or
    timestamps), reasons, shaded as throttled; ``down``: the same for times a GPU was down."""
    panels = [p for p in (RAW_PANELS if source == "raw" else ROLLUP_PANELS)
              if any(c in series and series[c].notna().any() for c, *_ in p.columns)]
    fig = make_subplots(rows=max(1, len(panels)), cols=1, shared_xaxes=True, vertical_spacing=0.02)
    shapes: list[dict[str, object]] = []
    for row, panel in enumerate(panels, start=1):
        for col, name, scale, dash in panel.columns:
            if col not in series or not series[col].notna().any():
                continue
            for gpu, g in series.groupby("gpu_index", sort=True):
                colour = GPU_COLORS[int(gpu) % len(GPU_COLORS)]
                fig.add_trace(go.Scatter(
                    x=g["time"], y=pd.to_numeric(g[col], errors="coerce") * scale, mode="lines",
                    name=f"GPU {int(gpu)} · {name}", legendgroup=f"gpu{int(gpu)}", showlegend=row == 1,
                    line={"color": colour, "dash": dash, "width": 1.5},
                    hovertemplate=f"GPU {int(gpu)} · {name}: %{{y:.4g}}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text=panel.title, row=row, col=1)
    if events is not None and len(events):
        for cat, g in events.groupby(events["category"].fillna("other")):
            fig.add_trace(go.Scatter(
                x=g["time"], y=[0] * len(g), mode="markers", name=f"event: {cat}",
                marker={"color": category_color(cat), "size": 11, "line": {"width": 1, "color": "black"},
                        "symbol": [SEVERITY_SYMBOLS.get(str(s), "circle") for s in g["severity"]]},
                text=[f"{k} {c or ''} GPU {'' if pd.isna(i) else int(i)}<br>{m}" for k, c, i, m in
                      zip(g["kind"], g["code"], g["gpu_index"], g["message"], strict=True)],
                hovertemplate="%{x}<br>%{text}<extra></extra>"), row=1, col=1)
        # Marked for every panel by one shape each, spanning the figure (yref paper): shapes added one
        # by one per subplot cost quadratic time in Plotly, minutes for a week of a busy GPU.
        shapes += [{"type": "line", "xref": "x", "yref": "paper", "x0": t, "x1": t, "y0": 0, "y1": 1,
                    "line": {"color": STATE_COLORS["unhealthy"], "width": 1, "dash": "dot"}}
                   for t in events[events["fatal"].eq(True) | events["severity"].eq("critical")]["time"]]
    for shaded, state, label in ((bands, "throttled", "throttled (clock-event reasons)"),
                                 (down, "down", "down (non-ok status)")):
        if shaded is None or not len(shaded):
            continue
        shapes += [{"type": "rect", "xref": "x", "yref": "paper", "x0": _time(b.start), "x1": _time(b.end),
                    "y0": 0, "y1": 1, "fillcolor": STATE_COLORS[state], "opacity": 0.12, "line": {"width": 0},
                    "layer": "below"} for b in shaded.itertuples(index=False)]
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"color": STATE_COLORS[state], "symbol": "square", "size": 12}))
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(title_text=TIME_AXIS, row=max(1, len(panels)), col=1)
    fig.update_layout(title="GPU metrics", hovermode="x unified")
    return _layout(fig, height=170 * max(1, len(panels)) + 120)


def network(frame: pd.DataFrame) -> go.Figure:
    """Receive and transmit rates per interface. ``frame``: time, interface, rx/tx_bytes_per_second."""
    fig = go.Figure()
    for i, (name, g) in enumerate(frame.groupby("interface", sort=True)):
        colour = GPU_COLORS[i % len(GPU_COLORS)]
        for col, what, dash in (("rx_bytes_per_second", "rx", "solid"), ("tx_bytes_per_second", "tx", "dot")):
            fig.add_trace(go.Scatter(x=g["time"], y=g[col], mode="lines", name=f"{name} {what}",
                                     line={"color": colour, "dash": dash},
                                     hovertemplate=f"{name} {what}: %{{y:.3s}}B/s<extra></extra>"))
    fig.update_layout(title="Network")
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="throughput (B/s)", tickformat=".2s", rangemode="tozero")
    return _layout(fig, height=320)


def storage(disks: pd.DataFrame, filesystems: pd.DataFrame) -> go.Figure:
    """Disk utilization and throughput per device, filesystem usage per path, on one time axis."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04)
    for i, (dev, g) in enumerate(disks.groupby("device", sort=True) if len(disks) else []):
        colour = GPU_COLORS[i % len(GPU_COLORS)]
        fig.add_trace(go.Scatter(x=g["time"], y=g["utilization_ratio"] * 100, name=f"{dev} busy", mode="lines",
                                 line={"color": colour}, hovertemplate=f"{dev}: %{{y:.0f}}%<extra></extra>"), 1, 1)
        for col, what, dash in (("read_bytes_per_second", "read", "solid"), ("write_bytes_per_second", "write", "dot")):
            fig.add_trace(go.Scatter(x=g["time"], y=g[col], name=f"{dev} {what}", mode="lines",
                                     line={"color": colour, "dash": dash},
                                     hovertemplate=f"{dev} {what}: %{{y:.3s}}B/s<extra></extra>"), 2, 1)
    for i, (path, g) in enumerate(filesystems.groupby("path", sort=True) if len(filesystems) else []):
        used = g["used_bytes"] / g["size_bytes"] * 100
        fig.add_trace(go.Scatter(x=g["time"], y=used, name=f"{path} used", mode="lines",
                                 line={"color": GPU_COLORS[(i + 5) % len(GPU_COLORS)]},
                                 hovertemplate=f"{path}: %{{y:.1f}}% used<extra></extra>"), 3, 1)
    fig.update_yaxes(title_text="disk busy (%)", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="disk (B/s)", tickformat=".2s", row=2, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="filesystem used (%)", row=3, col=1, range=[0, 100])
    fig.update_xaxes(title_text=TIME_AXIS, row=3, col=1)
    fig.update_layout(title="Storage")
    return _layout(fig, height=560)


# -- failures -----------------------------------------------------------------------------------


def event_timeline(events: pd.DataFrame, window: tuple[object, object] | None = None) -> go.Figure:
    """Events by time and node, coloured by category, shaped by severity, over ``window`` (start,
    end as epoch seconds or timestamps) when given.
    ``events``: time, node, category, severity, kind, code, gpu_index, message."""
    fig = go.Figure()
    for cat, g in events.groupby(events["category"].fillna("other"), sort=True):
        fig.add_trace(go.Scatter(
            x=g["time"], y=g["node"], mode="markers", name=str(cat),
            marker={"color": category_color(cat), "size": 10, "opacity": 0.85,
                    "symbol": [SEVERITY_SYMBOLS.get(str(s), "circle") for s in g["severity"]]},
            text=[f"{k} {'' if pd.isna(c) else c} · GPU {'' if pd.isna(i) else int(i)} · {s}<br>{m}"
                  for k, c, i, s, m in zip(g["kind"], g["code"], g["gpu_index"], g["severity"], g["message"],
                                           strict=True)],
            hovertemplate="%{y} %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(title="Events")
    fig.update_xaxes(title_text=TIME_AXIS, range=[_time(t) for t in window] if window else None)
    fig.update_yaxes(title_text="node", type="category", categoryorder="category descending")
    return _layout(fig, height=max(300, 24 * events["node"].nunique() + 160))


def failure_breakdown(by_category: pd.DataFrame) -> go.Figure:
    """Events and GPU-hours lost per category, side by side.
    ``by_category``: category, count, lost_hours."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Warning and critical events", "GPU-hours lost"))
    colours = [category_color(c) for c in by_category["category"]]
    fig.add_trace(go.Bar(x=by_category["category"], y=by_category["count"], marker_color=colours, name="events",
                         hovertemplate="%{x}: %{y} events<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=by_category["category"], y=by_category["lost_hours"], marker_color=colours,
                         name="GPU-hours lost", hovertemplate="%{x}: %{y:.2f} GPU-h<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text="category", row=1, col=1)
    fig.update_xaxes(title_text="category", row=1, col=2)
    fig.update_yaxes(title_text="events (count)", row=1, col=1)
    fig.update_yaxes(title_text="GPU-hours lost (h)", row=1, col=2)
    fig.update_layout(showlegend=False)
    return _layout(fig)


def failure_heatmap(node_days: pd.DataFrame) -> go.Figure:
    """Failures per node per UTC day. ``node_days``: node, day (date), failures."""
    pivot = node_days.pivot_table(index="node", columns="day", values="failures", aggfunc="sum", fill_value=0)
    fig = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=[str(c) for c in pivot.columns], y=list(pivot.index),
                               colorscale="Reds", zmin=0, colorbar={"title": {"text": "failures (count)"}},
                               hovertemplate="%{y} on %{x}: %{z} failures<extra></extra>"))
    fig.update_layout(title="Failures per node and day")
    fig.update_xaxes(title_text="day (UTC)", type="category")
    fig.update_yaxes(title_text="node", autorange="reversed")
    return _layout(fig, height=max(260, 24 * len(pivot.index) + 140))


# -- benchmarks ---------------------------------------------------------------------------------


def _axis(metric: str, unit: object) -> str:
    return f"{metric} ({unit})" if pd.notna(unit) and unit else metric


def bench_distribution(results: pd.DataFrame) -> go.Figure:
    """One workload and metric: a box per GPU model with every result, the fleet median and the
    stragglers marked. ``results``: gpu_model, value, label, straggler, fleet_median, ratio, metric, unit."""
    fig = go.Figure()
    for model, g in results.groupby("gpu_model", sort=True):
        fig.add_trace(go.Box(y=g["value"], x=[model] * len(g), name=str(model), boxpoints="all", jitter=0.4,
                             pointpos=0, marker={"color": "#607d8b", "size": 6}, line={"color": "#90a4ae"},
                             text=g["label"], hovertemplate="%{text}: %{y:.4g}<extra></extra>", showlegend=False))
        fig.add_trace(go.Scatter(x=[model], y=[g["fleet_median"].iloc[0]], mode="markers", name="fleet median",
                                 marker={"symbol": "line-ew-open", "size": 44, "color": "black", "line": {"width": 3}},
                                 showlegend=model == results["gpu_model"].min(),
                                 hovertemplate=f"{model} fleet median: %{{y:.4g}}<extra></extra>"))
    slow = results[results["straggler"]]
    fig.add_trace(go.Scatter(x=slow["gpu_model"], y=slow["value"], mode="markers", name="straggler",
                             marker={"color": STRAGGLER_COLOR, "symbol": "x", "size": 13},
                             text=[f"{lbl}: {r:.0%} of median" for lbl, r in zip(slow["label"], slow["ratio"],
                                                                                 strict=True)],
                             hovertemplate="%{text}<extra></extra>"))
    metric, unit = results["metric"].iloc[0], results["unit"].iloc[0]
    fig.update_layout(title=f"{results['workload'].iloc[0]}: {metric} by GPU model")
    fig.update_xaxes(title_text="GPU model")
    fig.update_yaxes(title_text=_axis(metric, unit))
    return _layout(fig)


def bench_trend(results: pd.DataFrame, max_lines: int = 20) -> go.Figure:
    """One workload and metric over time, a line per GPU (beyond ``max_lines`` GPUs: the median per
    GPU model, plus the GPUs that straggled), stragglers marked.
    ``results``: time, value, label, gpu_model, straggler, metric, unit, workload."""
    fig = go.Figure()
    results = results.sort_values("time")
    if results["label"].nunique() > max_lines:
        medians = results.groupby(["gpu_model", "time"], as_index=False)["value"].median()
        for i, (model, g) in enumerate(medians.groupby("gpu_model", sort=True)):
            fig.add_trace(go.Scatter(x=g["time"], y=g["value"], mode="lines+markers", name=f"{model} median",
                                     line={"color": GPU_COLORS[i % len(GPU_COLORS)], "width": 2},
                                     hovertemplate=f"{model} median: %{{y:.4g}}<extra></extra>"))
        lines = results[results["label"].isin(results.loc[results["straggler"], "label"])]
    else:
        lines = results
    for i, (label, g) in enumerate(lines.groupby("label", sort=True)):
        fig.add_trace(go.Scatter(x=g["time"], y=g["value"], mode="lines+markers", name=str(label),
                                 line={"color": GPU_COLORS[i % len(GPU_COLORS)], "width": 1},
                                 hovertemplate=f"{label}: %{{y:.4g}}<extra></extra>"))
    slow = results[results["straggler"]]
    fig.add_trace(go.Scatter(x=slow["time"], y=slow["value"], mode="markers", name="straggler",
                             marker={"color": STRAGGLER_COLOR, "symbol": "x", "size": 13}, text=slow["label"],
                             hovertemplate="%{text}: %{y:.4g} (straggler)<extra></extra>"))
    metric, unit = results["metric"].iloc[0], results["unit"].iloc[0]
    fig.update_layout(title=f"{results['workload'].iloc[0]}: {metric} over time")
    fig.update_xaxes(title_text="run start (UTC)")
    fig.update_yaxes(title_text=_axis(metric, unit))
    return _layout(fig)


def mfu(results: pd.DataFrame) -> go.Figure:
    """Model FLOPs utilization per GPU (its latest result), coloured by GPU model.
    ``results``: rows with metric "mfu": label, gpu_model, value (0-1), time, workload."""
    latest = results.sort_values("time").groupby(["workload", "label"], as_index=False).last()
    fig = go.Figure()
    for i, (model, g) in enumerate(latest.groupby("gpu_model", sort=True)):
        fig.add_trace(go.Bar(x=g["label"], y=g["value"] * 100, name=str(model),
                             marker_color=GPU_COLORS[i % len(GPU_COLORS)], customdata=g["workload"],
                             hovertemplate="%{x} (%{customdata}): MFU %{y:.1f}%<extra></extra>"))
    fig.update_layout(title="MFU (latest result per GPU)")
    fig.update_xaxes(title_text="GPU (node / index)")
    fig.update_yaxes(title_text="MFU (%)", rangemode="tozero")
    return _layout(fig)


# -- alerts -------------------------------------------------------------------------------------

OUTCOME_COLORS = {"delivered": STATE_COLORS["busy"], "error, retried": STATE_COLORS["throttled"],
                  "error, gave up": STATE_COLORS["unhealthy"]}
AUDIT_COLORS = {"ok": STATE_COLORS["busy"], "failed": STATE_COLORS["unhealthy"], "denied": STATE_COLORS["throttled"]}


def outcome_bars(buckets: pd.DataFrame, window: tuple[object, object], step: int, colors: dict[str, str], count: str,
                 title: str, empty: str, height: int = 300) -> go.Figure:
    """Counts per time bucket, stacked by outcome, so bursts of failures stand out; an empty range still
    draws its axes, with the note ``empty``. ``buckets``: time (bucket start), outcome (a key of ``colors``),
    and the column ``count``."""
    fig = go.Figure()
    for outcome, colour in colors.items():
        g = buckets[buckets["outcome"] == outcome]
        if len(g):
            fig.add_trace(go.Bar(x=g["time"], y=g[count], name=outcome, marker_color=colour,
                                 offset=0, width=step * 1000,
                                 hovertemplate=f"{outcome}: %{{y}} {count}<extra></extra>"))
    if not len(buckets):
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font={"size": 14, "color": "#607d8b"})
        fig.update_yaxes(range=[0, 1])
    fig.update_layout(title=title, barmode="stack")
    fig.update_xaxes(title_text=TIME_AXIS, type="date", range=[_time(t) for t in window])
    fig.update_yaxes(title_text=f"{count} (count per {max(step // 60, 1)} min)", rangemode="tozero")
    return _layout(fig, height=height)


def delivery_attempts(buckets: pd.DataFrame, window: tuple[object, object], step: int) -> go.Figure:
    """Webhook delivery attempts per time bucket, stacked by outcome (a key of ``OUTCOME_COLORS``)."""
    return outcome_bars(buckets, window, step, OUTCOME_COLORS, "attempts", "Delivery attempts by outcome",
                        "No delivery attempts in this range")


def audit_activity(buckets: pd.DataFrame, window: tuple[object, object], step: int) -> go.Figure:
    """Audit entries per time bucket, stacked by outcome (a key of ``AUDIT_COLORS``)."""
    return outcome_bars(buckets, window, step, AUDIT_COLORS, "entries",
                        "Actions and configuration changes by outcome", "Nothing recorded in this range", height=260)


# -- planner ------------------------------------------------------------------------------------

SEVERITY_COLORS = {"critical": STATE_COLORS["unhealthy"], "warning": STATE_COLORS["throttled"], "info": "#1565c0"}


def forecast_fan(history: pd.DataFrame, forecast: pd.DataFrame, usable: pd.Series, target: float, level: float,
                 unit: str = "GPUs") -> go.Figure:
    """Demand history and its forecast with the prediction interval as a band, against capacity and
    usable capacity × target. ``history``: demand, capacity by time; ``forecast``: mean, lower, upper."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=history.index, y=history["capacity"], name="capacity", mode="lines",
                             line={"color": STATE_COLORS["down"], "width": 1, "shape": "hv"},
                             hovertemplate=f"capacity: %{{y:,.0f}} {unit}<extra></extra>"))
    fig.add_trace(go.Scatter(x=history.index, y=history["demand"], name="demand", mode="lines",
                             line={"color": GPU_COLORS[0], "width": 1.5},
                             hovertemplate=f"demand: %{{y:,.1f}} {unit}<extra></extra>"))
    fig.add_trace(go.Scatter(x=forecast.index, y=forecast["upper"], mode="lines", line={"width": 0},
                             showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=forecast.index, y=forecast["lower"], mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor="rgba(255,127,14,0.25)", name=f"{level:.0%} interval",
                             hovertemplate=f"%{{y:,.1f}} {unit} (interval)<extra></extra>"))
    fig.add_trace(go.Scatter(x=forecast.index, y=forecast["mean"], name="forecast", mode="lines",
                             line={"color": GPU_COLORS[1], "width": 2},
                             hovertemplate=f"forecast: %{{y:,.1f}} {unit}<extra></extra>"))
    fig.add_trace(go.Scatter(x=usable.index, y=usable * target, name=f"usable × {target:.0%}", mode="lines",
                             line={"color": STATE_COLORS["unhealthy"], "dash": "dash", "width": 1.5},
                             hovertemplate=f"usable × target: %{{y:,.0f}} {unit}<extra></extra>"))
    fig.update_layout(title="Demand vs capacity, with the forecast", hovermode="x unified")
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text=f"{unit} (hourly mean)", rangemode="tozero")
    return _layout(fig, height=400)


def whatif_allocation(series: dict[str, dict[str, list[float]]]) -> go.Figure:
    """GPU allocation and queued jobs over simulated time, one line per simulated fleet.
    ``series``: fleet label → ``SimResult.series()`` (time_s, allocation_ratio, queued)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, (label, s) in enumerate(series.items()):
        hours = [t / 3600 for t in s["time_s"]]
        colour = GPU_COLORS[i % len(GPU_COLORS)]
        fig.add_trace(go.Scatter(x=hours, y=[a * 100 for a in s["allocation_ratio"]], name=label, mode="lines",
                                 line={"color": colour}, legendgroup=label,
                                 hovertemplate=f"{label}: %{{y:.0f}}% allocated<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=hours, y=s["queued"], name=label, mode="lines", line={"color": colour},
                                 legendgroup=label, showlegend=False,
                                 hovertemplate=f"{label}: %{{y}} queued<extra></extra>"), row=2, col=1)
    fig.update_layout(title="What-if: GPU allocation and queue over simulated time")
    fig.update_yaxes(title_text="GPUs allocated (%)", range=[0, 100], row=1, col=1)
    fig.update_yaxes(title_text="jobs queued", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="simulated time (hours)", row=2, col=1)
    return _layout(fig, height=420)


def recommendation_counts(recs: pd.DataFrame) -> go.Figure:
    """Recommendations per kind, stacked by severity. ``recs``: kind, severity."""
    fig = go.Figure()
    counts = recs.groupby(["kind", "severity"]).size().rename("n").reset_index() if len(recs) else recs
    for severity, colour in SEVERITY_COLORS.items():
        g = counts[counts["severity"] == severity] if len(counts) else counts
        if len(g):
            fig.add_trace(go.Bar(x=g["kind"], y=g["n"], name=severity, marker_color=colour,
                                 hovertemplate=f"%{{x}}, {severity}: %{{y}}<extra></extra>"))
    if not len(recs):
        fig.add_annotation(text="Nothing to recommend", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 14, "color": "#607d8b"})
    fig.update_layout(title="Recommendations by kind and severity", barmode="stack")
    fig.update_xaxes(title_text="kind")
    fig.update_yaxes(title_text="recommendations (count)", rangemode="tozero")
    return _layout(fig, height=300)
