"""The infer workload: arrival schedule, open-loop serving, QPS search, scenarios, int8 quantization."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from agent.workloads.base import RunContext, WorkloadResult
from agent.workloads.infer import (
    MIN_P99_QUERIES,
    WORKLOAD,
    arrival_schedule,
    build_model,
    sample_inputs,
    search_max_qps,
    serve,
)
from tests.workloads.test_train import one_thread  # noqa: F401  (autouse: one torch thread here too)

MLP = {"model": "mlp", "inputs": 32, "hidden": 64, "outputs": 8, "layers": 3, "dtype": "fp32", "batch": 64,
       "queries": 50, "server_queries": 40, "search_steps": 1, "latency_bound_s": 1.0}


def run(tmp_path: Path, **params: Any) -> WorkloadResult:
    return WORKLOAD.run(RunContext(device="cpu", suite="quick", scratch_dir=tmp_path, budget_s=0.1),
                        {**MLP, **params})


# -- the Server scenario's arrivals, serving and search ---------------------------------------------


def test_arrival_schedule_is_a_seeded_poisson_process() -> None:
    qps, n = 200.0, 5000
    times = arrival_schedule(qps, n, seed=1)
    assert times == arrival_schedule(qps, n, seed=1) and times != arrival_schedule(qps, n, seed=2)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(g > 0 for g in gaps)
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / qps, rel=0.05)  # standard error 1/sqrt(5000) = 1.4%
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1
    stats = pytest.importorskip("scipy.stats")
    assert stats.kstest(gaps, "expon", args=(0, 1 / qps)).pvalue > 0.01
    with pytest.raises(ValueError):
        arrival_schedule(0, 10, seed=1)


class VirtualClock:
    """Time that moves only when slept in, spent by a query, or (a microsecond) read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_serve_measures_from_the_scheduled_arrival() -> None:
    clock = VirtualClock()

    def query() -> None:
        clock.now += 0.0015

    lat = serve(query, [0.0, 0.001, 0.002, 0.010], clock=clock, sleep=clock.sleep)
    # The second and third queries wait behind the first: their queueing counts.
    assert lat == pytest.approx([0.0015, 0.002, 0.0025, 0.0015], abs=2e-5)


def test_search_finds_the_highest_rate_under_the_bound() -> None:
    service = 1e-3

    def mm1(qps: float) -> list[float]:  # an M/M/1 queue's p99 sojourn time: s ln(100) / (1 - rho)
        rho = qps * service
        return [math.inf if rho >= 1 else service * math.log(100) / (1 - rho)] * 10

    best_rate = (1 - service * math.log(100) / 0.02) / service  # 769.7/s for a 20 ms bound
    found = search_max_qps(mm1, 1 / service, 0.02, steps=6)
    assert found.best is not None and best_rate - 500 / 2**6 <= found.best.qps <= best_rate
    assert [t.qps for t in found.trials[:2]] == [1000, 500] and not found.trials[0].ok
    assert search_max_qps(mm1, 1 / service, 1e-4, steps=3).best is None  # nothing can meet 0.1 ms
    assert search_max_qps(lambda q: [0.001], 1000.0, 0.02, steps=3).best.qps == 1000.0  # type: ignore[union-attr]


# -- the scenarios on a tiny model ------------------------------------------------------------------


def test_single_stream_reports_p90_with_its_query_count(tmp_path: Path) -> None:
    r = run(tmp_path, scenario="single_stream")
    assert r.status == "ok", r.error
    p90 = r.metric("latency_p90")
    assert p90 and p90.unit == "s" and p90.count == 50 and len(p90.samples or []) == 50
    assert p90.value == p90.p90 and p90.median <= p90.value <= p90.p99  # type: ignore[operator]
    low = r.metric("p99_low_confidence")
    assert low and low.value == 1.0 and low.count == 50
    assert any(f"fewer than {MIN_P99_QUERIES}" in n for n in r.notes)


def test_server_searches_qps_and_flags_a_thin_p99(tmp_path: Path) -> None:
    r = run(tmp_path, scenario="server")
    assert r.status == "ok", r.error
    qps, p99 = r.metric("max_qps"), r.metric("latency_p99")
    assert qps and qps.value and qps.value > 0 and qps.count == 40
    assert p99 and p99.count == 40 and p99.value is not None and p99.value <= 1.0
    assert r.metric("p99_low_confidence").value == 1.0  # type: ignore[union-attr]
    assert any(n.startswith("server trials: ") for n in r.notes)


def test_offline_throughput_on_the_gpt(tmp_path: Path) -> None:
    gpt = {"model": "gpt", "layers": 1, "width": 32, "heads": 2, "seq_len": 16, "vocab": 64, "batch": 8}
    r = run(tmp_path, scenario="offline", **gpt)
    assert r.status == "ok", r.error
    assert r.metric("samples_per_second").value > 0  # type: ignore[union-attr,operator]


def test_int8_quantized_outputs_stay_close_to_float(tmp_path: Path) -> None:
    params = {**MLP, "inputs": 256, "hidden": 512, "outputs": 64, "scenario": "offline", "quantize": "int8"}
    r = run(tmp_path, **params)
    assert r.status == "ok", r.error
    model = build_model(params, seed=0).eval()
    with torch.inference_mode():
        scale = model(sample_inputs(model, 64, seed=1)).abs().max().item()
    # The stated tolerance: per-tensor int8 keeps every output within 5% of the largest float output,
    # and 1% on average.
    assert 0 < r.metric("output_max_abs_diff").value <= 0.05 * scale  # type: ignore[union-attr,operator]
    assert r.metric("output_mean_abs_diff").value <= 0.01 * scale  # type: ignore[union-attr,operator]
    assert r.metric("speedup").value > 0 and r.metric("samples_per_second")  # type: ignore[union-attr,operator]
    assert any("int8 via torch" in n for n in r.notes)


def test_bad_parameters_fail_or_skip_readably(tmp_path: Path) -> None:
    assert run(tmp_path, scenario="multi_stream").status == "failed"
    server_q = run(tmp_path, scenario="server", quantize="int8")
    assert server_q.status == "skipped" and "quantize" in (server_q.error or "")


def test_quick_params_use_the_mlp_and_cover_every_scenario() -> None:
    sets = WORKLOAD.params("quick", "cpu")
    assert {p["model"] for p in sets} == {"mlp"}
    assert {p["scenario"] for p in sets} == {"single_stream", "server", "offline"}
    assert any(p.get("quantize") == "int8" for p in sets)
    standard = WORKLOAD.params("standard", "cpu")
    assert all(p["server_queries"] >= MIN_P99_QUERIES for p in standard) and {p["model"] for p in standard} == {"gpt"}
