"""Fleet metrics and reliability figures against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from planner.demand import demand_from_jobs, step_average
from planner.metrics import (
    FleetHours,
    allocation_rate,
    completion_times,
    efficiency,
    failures_by_category,
    fleet_hours_from_state_hours,
    job_gpu_hours,
    job_metrics_from_frame,
    percentiles,
    queue_delays,
)
from planner.reliability import (
    failure_rate_per_1000_node_days,
    job_failure_rate,
    mttf_seconds,
    reliability_table,
    young_daly_interval_seconds,
)

H = 3600.0


def jobs_frame(rows: list[dict]) -> pd.DataFrame:
    cols = ["submit_ts", "start_ts", "end_ts", "gpus", "nodes", "category"]
    frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for c in cols[:-1]:
        frame[c] = frame[c].astype(float)
    return frame


# submit, start, end in hours; 4 jobs
JOBS = jobs_frame([
    {"submit_ts": 0, "start_ts": 1 * H, "end_ts": 3 * H, "gpus": 8, "nodes": 1, "category": None},
    {"submit_ts": 0, "start_ts": 2 * H, "end_ts": 6 * H, "gpus": 16, "nodes": 2, "category": "host"},
    {"submit_ts": 1 * H, "start_ts": 1 * H, "end_ts": 2 * H, "gpus": 1, "nodes": 1, "category": "user/app"},
    {"submit_ts": 2 * H, "start_ts": None, "end_ts": 3 * H, "gpus": 4, "nodes": 1, "category": "cancelled"},
])


def test_ratios() -> None:
    assert allocation_rate(60, 100, 20) == pytest.approx(0.75)
    assert allocation_rate(1, 10, 10) is None
    assert efficiency(30, 60) == pytest.approx(0.5)
    assert efficiency(0, 0) is None


def test_fleet_hours_from_state_hours() -> None:
    # 3 GPUs over 10 h; GPU 3 never reported (10 h down); GPU 1 was down 2 of its 10 h.
    rows = [
        {"reported_hours": 10, "busy_hours": 6, "idle_allocated_hours": 1, "down_hours": 2, "utilization": 0.5},
        {"reported_hours": 10, "busy_hours": 2, "idle_allocated_hours": 3, "down_hours": 0, "utilization": 0.2},
    ]
    fh = fleet_hours_from_state_hours(rows, inventory_gpus=3, range_seconds=10 * H)
    assert (fh.total, fh.down, fh.allocated, fh.idle_held) == (30, 12, 12, 4)
    assert fh.used == pytest.approx(0.5 * 8 + 0.2 * 10)  # 6 GPU-hours used
    assert fh.allocation_rate == pytest.approx(12 / 18)
    assert fh.utilization == pytest.approx(6 / 18)
    assert fh.efficiency == pytest.approx(6 / 12)
    assert FleetHours(0, 0, 0, 0, 0).utilization is None


def test_job_gpu_hours_clip_to_the_range() -> None:
    assert list(job_gpu_hours(JOBS)) == [16, 64, 1, 0]
    assert list(job_gpu_hours(JOBS, start=2 * H, end=4 * H)) == [8, 32, 0, 0]


def test_percentiles_queue_and_jct() -> None:
    assert percentiles([1, 2, 3, 4, 5], (0.5, 0.9)) == {"p50": 3.0, "p90": pytest.approx(4.6)}
    assert percentiles([], (0.5,)) == {"p50": None}
    assert sorted(queue_delays(JOBS) / H) == [0, 1, 2]
    assert sorted(completion_times(JOBS) / H) == [1, 1, 3, 6]
    m = job_metrics_from_frame(JOBS, 0, 10 * H)
    assert m.queue_delay["p50"] == pytest.approx(1 * H)
    assert m.completion_time["p50"] == pytest.approx(2 * H)  # median of 1,1,3,6 h
    assert m.allocated_gpu_hours == pytest.approx(81)


def test_failures_by_count_and_by_gpu_hours() -> None:
    table = failures_by_category(JOBS).set_index("category")
    assert list(table.index) == ["host", "user/app", "cancelled"]  # ranked by GPU-hours lost
    assert table.loc["host", "gpu_hours_lost"] == 64 and table.loc["user/app", "gpu_hours_lost"] == 1
    assert table.loc["cancelled", "gpu_hours_lost"] == 0  # never started: nothing ran
    assert table["jobs"].tolist() == [1, 1, 1]
    assert table.loc["host", "job_share"] == pytest.approx(1 / 3)
    assert table.loc["host", "gpu_hours_share"] == pytest.approx(64 / 65)


def test_failure_rate_mttf_and_young_daly() -> None:
    assert failure_rate_per_1000_node_days(3, 1500) == pytest.approx(2.0)
    assert failure_rate_per_1000_node_days(1, 0) is None
    # 2 failures per 1,000 node-days: a 100-node job fails every 5 days.
    assert mttf_seconds(2.0, 100) == pytest.approx(5 * 86400)
    assert mttf_seconds(0.0, 8) is None
    # C = 10 min, MTTF = 5 days: sqrt(2 * 600 * 432000) = 22,768 s (6.3 h)
    assert young_daly_interval_seconds(600, 5 * 86400) == pytest.approx(math.sqrt(2 * 600 * 432000))
    rows = reliability_table(2.0, 600, node_counts=(1, 100))
    assert rows[1]["mttf_seconds"] == pytest.approx(432000)
    with pytest.raises(ValueError):
        mttf_seconds(1.0, 0)


def test_job_failure_rate_counts_infrastructure_per_node_day() -> None:
    rate = job_failure_rate(JOBS)
    # node-seconds: 1*2h + 2*4h + 1*1h = 11 node-hours; one host failure
    assert rate.failures == 1
    assert rate.node_days == pytest.approx(11 / 24)
    assert rate.per_1000_node_days == pytest.approx(1000 * 24 / 11)


def test_step_average_and_demand_from_jobs() -> None:
    # +2 at t=0.5, -2 at t=1.5 over buckets [0,1), [1,2): half of each bucket at 2
    assert step_average(np.array([0.5, 1.5]), np.array([2.0, -2.0]), np.array([0.0, 1.0, 2.0])).tolist() == [1, 1]
    frame = demand_from_jobs(JOBS, 0, 4 * H)
    # hour 0: jobs 1 and 2 pending (8 + 16); hour 1: job 1 running (8), job 2 pending (16), job 3 running (1)
    assert frame["pending"].tolist() == [24, 16, 4, 0]
    assert frame["running"].tolist() == [0, 9, 24, 16]
    assert frame["demand"].tolist() == [24, 25, 28, 16]
