"""The definitions behind the numbers: current state, outages, MTBF, stragglers."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import analysis

NOW = 1_764_000_000.0


def inventory(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"gpu_id": range(1, n + 1), "node_id": [1] * n, "node": ["a"] * n, "cluster": ["c"] * n,
                         "index": range(n), "model": ["H100"] * n, "uuid": [f"u{i}" for i in range(n)],
                         "first_seen": [NOW - 7200] * n, "last_seen": [NOW] * n})


def sample(gpu_id: int, age: float, **values: object) -> dict[str, object]:
    base = {"gpu_id": gpu_id, "ts": NOW - age, "status": "ok", "utilization_gpu_ratio": 0.0, "process_count": 0,
            "clock_event_reasons": 0, "power_watts": 100.0}
    return {**base, **values}


def test_classify_current_applies_the_definitions() -> None:
    latest = pd.DataFrame([
        sample(1, 5, utilization_gpu_ratio=0.05, clock_event_reasons=0x1 | 0x4),  # busy at the threshold, power cap
        sample(2, 5, utilization_gpu_ratio=0.049, process_count=2),  # idle-allocated
        sample(3, 31, clock_event_reasons=0x1 | 0x10),  # idle; gpu_idle and sync boost are not throttling
        # GPU 4's newest sample is 61 s old: at a 10 s interval, "recent" is 3 intervals but at least 60 s.
        sample(4, 61, utilization_gpu_ratio=0.9, remapped_rows_pending=True),
    ])
    unresolved = pd.DataFrame({"gpu_id": [3]})
    out = analysis.classify_current(inventory(), latest, {1: 10.0}, unresolved, NOW).set_index("gpu_id")
    assert out["state"].tolist() == ["busy", "idle-allocated", "idle", "down"]
    assert out["throttled"].tolist() == [True, False, False, False]
    assert out["unhealthy"].tolist() == [False, False, True, True]
    # A node sampling every 30 s gets 90 s before its GPUs count as down.
    slow = analysis.classify_current(inventory(), latest, {1: 30.0}, unresolved, NOW).set_index("gpu_id")
    assert slow.loc[4, "state"] == "busy"
    h = analysis.headline(out.reset_index())
    assert (h["gpus"], h["busy"], h["idle"], h["idle_allocated"], h["down"]) == (4, 1, 2, 1, 1)
    assert h["power_watts"] == 300.0 and h["utilization"] == pytest.approx(0.099 / 3)


def test_a_gpu_without_samples_or_with_a_bad_status_is_down() -> None:
    latest = pd.DataFrame([sample(1, 5, status="lost"), sample(2, 5, status="error")])
    out = analysis.classify_current(inventory(3), latest, {}, pd.DataFrame(columns=["gpu_id"]), NOW)
    assert out["down"].all() and not out["throttled"].any()
    found = analysis.problems(out, pd.DataFrame(columns=["kind", "code", "node", "gpu_index", "ts", "message",
                                                         "recommended_action"]))
    assert found["problem"].tolist() == ["down"] * 3
    assert found["detail"].tolist()[2] == "no recent samples"
    silent = analysis.classify_current(inventory(3), pd.DataFrame(), {}, pd.DataFrame(columns=["gpu_id"]), NOW)
    assert silent["down"].tolist() == [True] * 3
    nothing = analysis.classify_current(inventory(0), pd.DataFrame(), {}, pd.DataFrame(columns=["gpu_id"]), NOW)
    assert analysis.headline(nothing)["gpus"] == 0


def test_lost_hours_merges_one_outage_and_clips_to_the_range() -> None:
    outages = pd.DataFrame({
        "id": [1, 2, 3, 4], "gpu_id": [7, 7, 7, 8], "ts": [0.0, 60.0, 7200.0, 100.0],
        "ok_again": [3600.0, 3600.0, None, 460.0], "kind": ["xid", "gpu_lost", "xid", "ecc"],
        "code": ["79", None, "79", "uncorrected"], "category": ["gpu-hardware"] * 4, "node_id": [1] * 4})
    lost = analysis.lost_hours(outages, end=9000.0).set_index("id")
    assert lost["lost_hours"].tolist() == pytest.approx([1.0, 0.0, 0.5, 0.1])
    assert lost["incident"].tolist() == [True, False, True, True]


def test_mtbf() -> None:
    gpu_hours = pd.DataFrame({"gpu_id": [1, 2, 3, 4], "reported_hours": [10.0] * 4, "down_hours": [0, 2.0, 0, 0]})
    failed = pd.DataFrame({"node": ["a", "a", "b"], "day": [0.0] * 3, "category": ["gpu-hardware"] * 3,
                           "gpu_level": [True, True, False]})
    inv = inventory().assign(node=["a", "a", "b", "b"])
    summary, nodes = analysis.mtbf(gpu_hours, inv, failed, 0, 36000)
    s = summary.set_index("component")
    assert s.loc["GPU", "mtbf_hours"] == pytest.approx(38 / 2)
    assert s.loc["node", "mtbf_hours"] == pytest.approx(20 / 3)
    assert s.loc["fleet", "mtbf_hours"] == pytest.approx(10 / 3)
    assert nodes.set_index("node")["failures"].to_dict() == {"a": 2, "b": 1}
    none, _ = analysis.mtbf(gpu_hours, inv, failed.iloc[0:0], 0, 36000)
    assert none["mtbf_hours"].isna().all()


def test_stragglers_by_model_and_direction() -> None:
    rows = [{"workload": "gemm", "metric": "tflops", "unit": "TFLOP/s", "gpu_model": m, "value": v, "status": "ok"}
            for m, v in (("H100", 100), ("H100", 100), ("H100", 89), ("A100", 30), ("A100", 31), ("A100", 30))]
    rows += [{"workload": "infer", "metric": "latency_p50", "unit": "s", "gpu_model": "H100", "value": v,
              "status": "ok"} for v in (1.0, 1.0, 1.2, 1.1)]
    rows += [{"workload": "gemm", "metric": "tflops", "unit": "TFLOP/s", "gpu_model": "L40S", "value": v,
              "status": "ok"} for v in (50, 10)]  # too few peers for a verdict
    out = analysis.stragglers(pd.DataFrame(rows))
    assert out[out["straggler"]][["gpu_model", "value"]].values.tolist() == [["H100", 89], ["H100", 1.2]]
    assert out.loc[0, "fleet_median"] == 100 and out.loc[2, "ratio"] == pytest.approx(0.89)


def test_flatten_environment() -> None:
    assert analysis.flatten("env", {"torch": "2.13", "cuda": {"version": "13.0"}, "gpus": [1, 2]}) == {
        "env_torch": "2.13", "env_cuda_version": "13.0", "env_gpus": "[1, 2]"}
    assert analysis.flatten("env", None) == {}
