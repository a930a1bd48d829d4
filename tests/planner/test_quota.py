"""Quota rebalancing: starved and idle VCs are found with their evidence, and GPUs move from one to the other."""

from __future__ import annotations

import pandas as pd
import pytest

from planner.demand import demand_by_group
from planner.quota import VcEvidence, rebalance, rebalance_frames, vc_evidence


def frame(running: list[float], pending: list[float], capacity: float | list[float]) -> pd.DataFrame:
    idx = pd.date_range("2026-01-01", periods=len(running), freq="h", tz="UTC")
    return pd.DataFrame({"running": running, "pending": pending, "capacity": capacity}, index=idx)


def test_evidence_numbers() -> None:
    e = vc_evidence("a", frame([32, 32, 16, 16], [8, 8, 0, 16], 32))
    assert e.capacity == 32 and e.hours == 4
    assert e.mean_running == 24 and e.mean_allocation == pytest.approx(0.75)
    assert e.pending_share == 0.75 and e.mean_pending == 8
    assert e.pending_gpu_hours == 32 and e.idle_gpu_hours == 32
    assert e.status() == "starved"


def test_hours_without_capacity_are_left_out() -> None:
    e = vc_evidence("b", frame([4, 0, 4], [0, 0, 0], [16, 0, 16]))
    assert e.hours == 2 and e.mean_allocation == pytest.approx(0.25)
    assert e.status() == "idle"
    empty = vc_evidence("c", frame([0], [0], [0]))
    assert empty.mean_allocation is None and empty.status() == "ok"


def test_idle_gives_whole_nodes_to_starved() -> None:
    starved = frame([64] * 10, [20] * 8 + [0] * 2, 64)  # pending 80% of the time, 16 GPUs on average
    idle = frame([10] * 9 + [20], [0] * 10, 96)  # 11% allocated; p95 running 15.5 -> keeps 20, spares 76 -> 72
    busy = frame([50] * 10, [0] * 10, 64)
    plan = rebalance_frames({"starved": starved, "idle": idle, "busy": busy})
    assert plan.statuses == {"busy": "ok", "idle": "idle", "starved": "starved"}
    assert plan.need == {"starved": 16} and plan.spare == {"idle": 72}
    assert [(t.from_vc, t.to_vc, t.gpus) for t in plan.transfers] == [("idle", "starved", 16)]


def test_largest_need_is_served_first_and_spares_run_out() -> None:
    ev = [VcEvidence("s1", 64, 64, 64, 1.0, 0.9, 30, 40, 300, 0, 10),
          VcEvidence("s2", 64, 64, 64, 1.0, 0.6, 10, 20, 100, 0, 10),
          VcEvidence("i1", 64, 5, 8, 0.08, 0.0, 0, 0, 0, 590, 10)]
    plan = rebalance(ev, target=0.8, per_node=8)
    assert plan.need == {"s1": 32, "s2": 16} and plan.spare == {"i1": 48}
    assert [(t.from_vc, t.to_vc, t.gpus) for t in plan.transfers] == [("i1", "s1", 32), ("i1", "s2", 16)]


def test_rebalance_from_jobs_by_partition() -> None:
    h = 3600.0
    jobs = pd.DataFrame({
        "partition": ["prod", "prod", "research"],
        "submit_ts": [0.0, 0.0, 0.0], "start_ts": [0.0, float("nan"), 0.0], "end_ts": [4 * h, 4 * h, h],
        "gpus": [16.0, 8.0, 2.0],
    })
    frames = demand_by_group(jobs, 0, 4 * h, key="partition")
    frames["prod"]["capacity"] = 16
    frames["research"]["capacity"] = 32
    plan = rebalance_frames(frames)
    assert plan.statuses == {"prod": "starved", "research": "idle"}
    assert [(t.from_vc, t.to_vc, t.gpus) for t in plan.transfers] == [("research", "prod", 8)]
