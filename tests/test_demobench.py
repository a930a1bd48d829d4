"""The demo's benchmark history: one real run, scaled per simulated GPU, flags the scenario's slow GPU."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select

from collectors.gpu_models import get_model
from db.models import BenchResult, BenchRun, Event, Gpu, Node
from gpufleet import demo
from gpufleet.demobench import Measured, measure_once, scaled
from planner.stragglers import refresh
from tests.conftest import migrated

DAYS = 3


@pytest.fixture(scope="module")
def measured() -> list[Measured]:
    return measure_once()


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    with migrated(sqlite_url) as e:
        yield e


def test_the_real_run_is_real_and_quick(measured: list[Measured]) -> None:
    assert [m.workload for m in measured] == ["gemm", "train"]
    gemm, train = measured
    assert next(r["value"] for r in gemm.metrics if r["metric"] == "tflops") > 0
    mfu = next(r["value"] for r in train.metrics if r["metric"] == "mfu")
    assert 0 < mfu < 1.5  # against the gemm's own rate on this CPU (remembered as the peak)
    assert "the demo's gemm run" in " ".join(train.environment["notes"])
    assert gemm.environment["torch"] and gemm.environment["dtype"] == "fp32"
    assert sum(m.seconds for m in measured) < 20  # `make demo` waits for it


def test_scaling_follows_each_metrics_direction() -> None:
    rows = [{"metric": "tflops", "unit": "TFLOP/s", "value": 10.0, "median": 10.0, "p90": 9.0, "p99": None},
            {"metric": "time", "unit": "s", "value": 2.0, "median": 2.0, "p90": 2.5, "p99": 3.0, "samples": [2.0, 2.5]},
            {"metric": "loss_end", "unit": "nats", "value": 3.5}]
    fast, slow_time, loss = scaled(rows, 0.8)
    assert fast["value"] == pytest.approx(8.0) and fast["p90"] == pytest.approx(7.2) and fast["p99"] is None
    assert slow_time["value"] == pytest.approx(2.5) and slow_time["samples"] == pytest.approx([2.5, 3.125])
    assert loss["value"] == 3.5


def test_demo_history_flags_the_slow_gpu(engine: Engine, measured: list[Measured]) -> None:
    end = time.time()
    start = end - DAYS * 86400
    nodes = demo.fleet(4, 8, start, DAYS * 86400)
    with engine.begin() as conn:  # the inventory the telemetry replay would have written
        for node in nodes:
            node_id = conn.execute(insert(Node).returning(Node.id), {"name": node.name, "first_seen": start,
                                                                      "last_seen": end}).scalar_one()
            model = get_model(node.scenario.model)
            conn.execute(insert(Gpu), [{"node_id": node_id, "index": i, "uuid": f"GPU-{node.name}-{i}",
                                        "model": model.name if model else None, "first_seen": start,
                                        "last_seen": end} for i in range(node.scenario.gpus)])
    for node in nodes:
        demo._benchmarks(engine, node, demo._fake(node, start), start, end, measured)
    refresh(engine, now=end)
    with engine.connect() as conn:
        events = conn.execute(select(Node.name, Event.gpu_index, Event.code, Event.message).join(
            Node, Node.id == Event.node_id).where(Event.kind == "bench_slow")).all()
        envs = conn.execute(select(BenchRun.environment, BenchRun.config)).all()
        slow = conn.execute(select(BenchResult.value).join(BenchRun).join(Gpu, Gpu.id == BenchRun.gpu_id).join(
            Node, Node.id == Gpu.node_id).where(Node.name == "node-04", Gpu.index == 6,
                                                BenchResult.metric == "tflops")).scalars().all()
    # node-04 GPU 6 runs at 85% of its peers in the demo's scenario: its gemm straggles, and the node's
    # synchronous training run goes at its pace. Nothing else in the fleet is slow two nights running.
    assert {(n, g, c) for n, g, c, _ in events} == {("node-04", 6, "gemm"), ("node-04", None, "train")}
    assert all("of the fleet's pace" in m for *_, m in events)
    assert all(env["simulated"] is True and env["device_model"] == "NVIDIA H100 80GB HBM3" for env, _ in envs)
    gemm_tflops = next(r["value"] for r in measured[0].metrics if r["metric"] == "tflops")
    assert slow and all(v == pytest.approx(0.85 * gemm_tflops, rel=0.03) for v in slow)


def test_a_night_with_every_gpu_lost_runs_nothing(engine: Engine) -> None:
    """A node whose GPUs are all lost that night stores no runs for it (and does not fail: the train
    run takes the slowest GPU's pace, and there is none)."""
    from gpufleet.demobench import write_history

    runs = [Measured("gemm", {"n": 64}, [{"metric": "tflops", "unit": "TFLOP/s", "value": 1.0}], {}, 0.1),
            Measured("train", {"steps": 2}, [{"metric": "tokens_per_s", "unit": "tokens/s", "value": 10.0}], {}, 0.1)]
    with engine.begin() as conn:
        node_id = conn.execute(insert(Node).returning(Node.id), {"name": "n1", "first_seen": 0.0,
                                                                  "last_seen": 0.0}).scalar_one()
        gpu_id = conn.execute(insert(Gpu).returning(Gpu.id), {"node_id": node_id, "uuid": "GPU-1", "index": 0,
                                                               "first_seen": 0.0, "last_seen": 0.0}).scalar_one()
        write_history(conn, runs, node="n1", node_id=node_id, gpus={0: gpu_id}, nights=[0.0, 86400.0],
                      speed=lambda index, night: 0.0 if night == 0.0 else 1.0, gpu_model="H100", driver=None,
                      start=1_800_000_000.0)
        started = sorted(r.started_at for r in conn.execute(select(BenchRun.started_at)))
    assert len(started) == 2 and min(started) >= 1_800_000_000.0 + 86400.0  # only the second night ran
