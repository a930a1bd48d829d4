"""Figure builders are pure: a frame in, a figure out with the expected traces, units and colours."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import analysis, charts

T0 = 1_764_000_000.0


def times(n: int, step: float = 60.0) -> pd.Series:
    return analysis.to_time(pd.Series([T0 + step * i for i in range(n)]))


def test_state_colours_cover_every_state_and_flag() -> None:
    assert set(charts.STATE_COLORS) == {"busy", "idle", "idle-allocated", "throttled", "unhealthy", "down"}
    assert len(set(charts.STATE_COLORS.values())) == 6


def test_state_area() -> None:
    frame = pd.DataFrame({"time": times(3), "busy": [2, 3, 3], "idle-allocated": [1, 0, 0], "idle": [1, 1, 0],
                          "down": [0, 0, 1], "throttled": [0, 1, 1]})
    fig = charts.state_area(frame)
    names = [t.name for t in fig.data]
    assert names == ["busy", "idle-allocated", "idle", "down", "throttled"]
    assert {t.stackgroup for t in fig.data[:4]} == {"states"} and fig.data[4].stackgroup is None
    assert fig.data[0].line.color == charts.STATE_COLORS["busy"]
    assert fig.layout.xaxis.title.text == "time (UTC)"
    assert "GPUs" in fig.layout.yaxis.title.text


def test_utilization_heatmap_groups_gpus_by_node() -> None:
    rows = [{"label": f"{n} / GPU {i}", "node": n, "index": i, "time": t, "utilization": 0.5}
            for n in ("b", "a") for i in (1, 0) for t in times(2)]
    fig = charts.utilization_heatmap(pd.DataFrame(rows))
    heat = fig.data[0]
    assert list(heat.y) == ["a / GPU 0", "a / GPU 1", "b / GPU 0", "b / GPU 1"]
    assert heat.z.shape == (4, 2) and heat.z.max() == 50  # percent
    assert heat.colorbar.title.text == "utilization (%)"


def raw_series() -> pd.DataFrame:
    n = 6
    return pd.DataFrame({
        "gpu_id": [1] * n + [2] * n, "gpu_index": [0] * n + [1] * n, "ts": [T0 + 60 * i for i in range(n)] * 2,
        "time": list(times(n)) * 2, "utilization_gpu_ratio": [0.9] * 2 * n, "power_watts": [500.0] * 2 * n,
        "power_limit_watts": [700.0] * 2 * n, "sm_clock_hz": [1.9e9] * 2 * n,
        "clock_event_reasons": [0, 0x40, 0x40, 0, 0, 0] + [0] * n, "ecc_uncorrected_volatile_total": [0] * 2 * n,
        "fan_speed_ratio": [None] * 2 * n,
    })


def test_gpu_metrics_panels_units_events_and_bands() -> None:
    series = raw_series()
    events = pd.DataFrame({"time": times(1), "kind": ["xid"], "code": ["79"], "severity": ["critical"],
                           "category": ["gpu-hardware"], "message": ["fell off the bus"], "gpu_index": [1],
                           "fatal": [True]})
    bands = analysis.throttle_bands(series, 60)
    down = analysis.down_bands(series.assign(status=["ok"] * 11 + ["lost"]), 60)
    assert down[["start", "end", "gpus", "reasons"]].values.tolist() == [[T0 + 300, T0 + 360, "1", "down"]]
    assert bands[["start", "end", "reasons", "gpus"]].values.tolist() == [
        [T0 + 60, T0 + 180, "hw_thermal_slowdown", "0"]]
    fig = charts.gpu_metrics(series, "raw", events, bands, down)
    titles = [fig.layout[f"yaxis{'' if i == 1 else i}"].title.text for i in range(1, 5)]
    assert titles == ["utilization (%)", "power (W)", "clocks (MHz)", "errors (count)"]  # only panels with data
    util = [t for t in fig.data if t.name == "GPU 0 · utilization"][0]
    assert max(util.y) == pytest.approx(90)
    assert {t.name for t in fig.data if t.name.startswith("GPU 1")} >= {"GPU 1 · power", "GPU 1 · power limit"}
    assert any(t.name == "event: gpu-hardware" for t in fig.data)
    band = next(s for s in fig.layout.shapes if s.type == "rect")
    assert pd.Timestamp(band.x0) == series["time"].iloc[1]  # on the time axis, not in epoch seconds
    kinds = [s.type for s in fig.layout.shapes]
    assert kinds.count("rect") == 2 and kinds.count("line") == 1  # two bands and a fatal event, one shape each
    assert all(s.yref == "paper" and (s.y0, s.y1) == (0, 1) for s in fig.layout.shapes)  # spanning every panel
    assert {"throttled (clock-event reasons)", "down (non-ok status)"} <= {t.name for t in fig.data}
    assert fig.layout.xaxis4.title.text == "time (UTC)"


def test_gpu_metrics_from_rollups_uses_rollup_columns() -> None:
    series = pd.DataFrame({"gpu_index": [0, 0], "time": times(2), "utilization_avg": [0.5, 0.6],
                           "throttled_ratio": [0.0, 0.5], "thermal_ratio": [0.0, 0.5]})
    fig = charts.gpu_metrics(series, "1h")
    assert [fig.layout.yaxis.title.text, fig.layout.yaxis2.title.text] == ["utilization (%)",
                                                                           "throttled (% of samples)"]
    assert analysis.throttle_bands(series.assign(ts=[T0, T0 + 3600]), 3600)["reasons"].tolist() == [
        "sw_thermal_slowdown"]


def test_network_and_storage() -> None:
    net = pd.DataFrame({"time": list(times(2)) * 2, "interface": ["eth0", "eth0", "ib0", "ib0"],
                        "rx_bytes_per_second": [1e8] * 4, "tx_bytes_per_second": [5e7] * 4})
    fig = charts.network(net)
    assert [t.name for t in fig.data] == ["eth0 rx", "eth0 tx", "ib0 rx", "ib0 tx"]
    assert fig.layout.yaxis.title.text == "throughput (B/s)"
    disks = pd.DataFrame({"time": times(2), "device": ["sda"] * 2, "utilization_ratio": [0.5] * 2,
                          "read_bytes_per_second": [1e6] * 2, "write_bytes_per_second": [2e6] * 2})
    fs = pd.DataFrame({"time": times(2), "path": ["/"] * 2, "used_bytes": [50] * 2, "size_bytes": [100] * 2})
    fig = charts.storage(disks, fs)
    assert [t.name for t in fig.data] == ["sda busy", "sda read", "sda write", "/ used"]
    assert list(fig.data[3].y) == [50, 50]
    assert [fig.layout[a].title.text for a in ("yaxis", "yaxis2", "yaxis3")] == [
        "disk busy (%)", "disk (B/s)", "filesystem used (%)"]


def test_event_timeline_colours_by_category() -> None:
    events = pd.DataFrame({"time": times(3), "node": ["a", "b", "a"], "category": ["gpu-hardware", "user/app", None],
                           "severity": ["critical", "warning", "info"], "kind": ["xid"] * 3, "code": ["79", "13", None],
                           "gpu_index": [0, 1, None], "message": ["m"] * 3})
    fig = charts.event_timeline(events, (T0 - 3600, T0 + 3600))
    assert [pd.Timestamp(x) for x in fig.layout.xaxis.range] == list(analysis.to_time(pd.Series([T0 - 3600,
                                                                                                 T0 + 3600])))
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"gpu-hardware", "user/app", "other"}
    assert by_name["gpu-hardware"].marker.color == charts.CATEGORY_COLORS["gpu-hardware"]
    assert list(by_name["gpu-hardware"].marker.symbol) == ["x"]
    assert fig.layout.yaxis.title.text == "node" and fig.layout.xaxis.title.text == "time (UTC)"


def test_failure_breakdown_and_heatmap() -> None:
    cats = pd.DataFrame({"category": ["gpu-hardware", "user/app"], "count": [3, 5], "lost_hours": [1.5, 0.0]})
    fig = charts.failure_breakdown(cats)
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert list(fig.data[1].y) == [1.5, 0.0]
    assert fig.layout.yaxis.title.text == "events (count)" and fig.layout.yaxis2.title.text == "GPU-hours lost (h)"
    heat = charts.failure_heatmap(pd.DataFrame({"node": ["a", "a", "b"], "day": ["2025-11-23", "2025-11-24",
                                                                                 "2025-11-24"], "failures": [1, 2, 1]}))
    assert heat.data[0].z.tolist() == [[1, 2], [0, 1]]
    assert heat.layout.xaxis.title.text == "day (UTC)"


def bench_frame() -> pd.DataFrame:
    rows = []
    for k, value in enumerate([100, 101, 99, 70]):
        rows.append({"workload": "gemm", "metric": "tflops", "unit": "TFLOP/s", "value": value, "status": "ok",
                     "gpu_model": "H100", "label": f"n / GPU {k}", "time": times(1)[0], "started_at": T0})
    return analysis.stragglers(pd.DataFrame(rows))


def test_bench_distribution_marks_stragglers_and_median() -> None:
    fig = charts.bench_distribution(bench_frame())
    names = [t.name for t in fig.data]
    assert names == ["H100", "fleet median", "straggler"]
    assert list(fig.data[2].y) == [70] and list(fig.data[1].y) == [99.5]
    assert fig.layout.yaxis.title.text == "tflops (TFLOP/s)" and fig.layout.xaxis.title.text == "GPU model"


def test_bench_trend_and_mfu() -> None:
    fig = charts.bench_trend(bench_frame())
    assert fig.data[-1].name == "straggler" and len(fig.data) == 5
    assert fig.layout.xaxis.title.text == "run start (UTC)"
    fig = charts.bench_trend(bench_frame(), max_lines=2)  # a big fleet: medians and the stragglers only
    assert [t.name for t in fig.data] == ["H100 median", "n / GPU 3", "straggler"]
    mfu = bench_frame().assign(metric="mfu", value=[0.4, 0.41, 0.39, 0.3])
    fig = charts.mfu(mfu)
    assert fig.layout.yaxis.title.text == "MFU (%)"
    assert sorted(fig.data[0].y) == pytest.approx([30, 39, 40, 41])


def test_gpu_metrics_draws_each_band_once() -> None:
    """A week of a flapping GPU is thousands of throttle bands: one shape each, not one per panel."""
    times = pd.date_range("2026-11-01", periods=600, freq="10min", tz="UTC")
    series = pd.DataFrame({"time": times, "gpu_index": 0, "utilization_gpu_ratio": 0.5, "power_watts": 300.0,
                           "temperature_gpu_celsius": 60.0, "sm_clock_hz": 1.8e9})
    bands = pd.DataFrame({"start": times[:-1:1].astype("int64") // 10**9,
                          "end": times[1::1].astype("int64") // 10**9 - 60, "reasons": "sw_power_cap"})
    fig = charts.gpu_metrics(series, "raw", bands=bands)
    assert len(fig.layout.shapes) == len(bands)  # per panel, it was quadratic: minutes for a week
