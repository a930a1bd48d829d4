"""Straggler rule (``db.stragglers``) and its history, streaks and events (``planner.stragglers``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from db.benchstore import save_run
from db.models import Event, Gpu, Node
from db.stragglers import grade, judge, robust_z
from planner.stragglers import evaluate, refresh
from tests.conftest import migrated

T0 = 1_764_000_000.0
DAY = 86400.0
ENV = {"device_model": "NVIDIA H100 80GB HBM3", "dtype": "bf16", "torch": "2.13.0", "driver": "580.65.06"}
CONFIG = {"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192}


def row(value: float, *, metric: str = "tflops", unit: str = "TFLOP/s", **env: Any) -> dict[str, Any]:
    return {"workload": "gemm", "metric": metric, "unit": unit, "value": value, "status": "ok", "gpu_model": None,
            "config": CONFIG, "environment": {**ENV, **env}}


def severities(rows: Sequence[dict[str, Any]]) -> list[str | None]:
    return [v.severity for v in judge(rows)]


# -- the rule against the fleet ------------------------------------------------------------------


def test_a_gpu_15_percent_slow_fails_and_5_percent_warns() -> None:
    values = [100.0, 100.4, 99.7, 100.2, 99.9, 100.1, 85.0, 94.0]
    verdicts = judge([row(v) for v in values])
    assert [v.severity for v in verdicts] == [None] * 6 + ["fail", "warn"]
    slow = verdicts[6]
    assert slow.straggler and slow.peers == 8
    assert slow.fleet_median == pytest.approx(99.95) and slow.speed == pytest.approx(85 / 99.95)
    assert slow.z > 3.5  # and a robust outlier too


def test_a_robust_outlier_in_a_tight_fleet_warns_but_noise_does_not() -> None:
    tight = [100.0 + 0.05 * k for k in range(8)]
    assert severities([row(v) for v in [*tight, 97.0]])[-1] == "warn"  # 3% off, z far above 3.5
    assert severities([row(v) for v in [*tight, 99.0]])[-1] is None  # 1% off: under the noise floor


def test_mad_zero_uses_the_mean_absolute_deviation() -> None:
    values = [100.0] * 7 + [85.0]
    z = robust_z(85.0, values)
    assert math.isfinite(z) and z == pytest.approx(-15 / (1.253314 * 15 / 8))
    assert severities([row(v) for v in values]) == [None] * 7 + ["fail"]
    assert robust_z(100.0, [100.0] * 5) == 0.0 and robust_z(90.0, [100.0] * 5) == -math.inf
    assert severities([row(100.0)] * 5) == [None] * 5


def test_too_few_peers_give_no_verdict() -> None:
    assert grade(50.0, [50.0], 1).severity is None and grade(50.0, [50.0], 1).peers == 1
    assert severities([row(100.0), row(50.0)]) == [None, None]  # two results: no median to trust
    assert severities([row(100.0), row(100.0), row(50.0)]) == [None, None, "fail"]


def test_lower_is_better_metrics_fail_when_higher() -> None:
    lat = [row(v, metric="latency_p99", unit="s") for v in (0.010, 0.010, 0.0101, 0.0099, 0.0115, 0.0085)]
    verdicts = judge(lat)
    assert [v.severity for v in verdicts] == [None, None, None, None, "fail", None]
    assert verdicts[4].speed == pytest.approx(0.010 / 0.0115)
    # A metric with no direction (an error size, a loss) is never judged.
    assert severities([row(v, metric="output_max_abs_diff", unit="output") for v in (1, 1, 1, 9)]) == [None] * 4


@pytest.mark.parametrize("key,other", [("torch", "2.12.0"), ("driver", "575.51.03"), ("dtype", "fp16"),
                                       ("device_model", "NVIDIA H100 PCIe")])
def test_results_whose_fingerprints_differ_are_not_compared(key: str, other: str) -> None:
    rows = [row(100.0) for _ in range(4)] + [row(80.0, **{key: other}) for _ in range(4)]
    assert severities(rows) == [None] * 8
    pooled = [row(100.0) for _ in range(4)] + [row(80.0) for _ in range(4)]  # the control: same fingerprint
    assert severities(pooled)[-1] == "fail"
    # Different parameters are different benchmarks.
    assert severities([row(100.0) for _ in range(4)] + [{**row(80.0), "config": {**CONFIG, "m": 4096}}]) == [None] * 5


# -- history, streaks and events -------------------------------------------------------------------


def history(nights: dict[tuple[str, int], Sequence[float]], base: float = 700.0) -> list[dict[str, Any]]:
    """Result rows for nightly gemm runs: ``nights[(node, gpu)]`` gives each night's speed factor."""
    rows, run_id = [], 0
    for (node, gpu), factors in sorted(nights.items()):
        for night, factor in enumerate(factors):
            run_id += 1
            rows.append({**row(base * factor), "run_id": run_id, "node_id": hash(node) % 1000, "node": node,
                         "gpu_id": gpu + 100 * (hash(node) % 1000), "gpu_index": gpu,
                         "started_at": T0 + night * DAY + gpu * 60})
    return rows


def test_history_evidence_and_the_two_consecutive_rule() -> None:
    nights = {("n1", g): [1.0] * 5 for g in range(6)}
    nights[("n1", 6)] = [1.0, 1.0, 0.85, 0.85, 0.85]
    nights[("n1", 7)] = [1.0, 0.85, 1.0, 0.85, 1.0]  # never twice in a row
    findings = evaluate(history(nights))
    slow = [f for f in findings if f.gpu_index == 6]
    assert [f.severity for f in slow] == [None, None, "fail", "fail", "fail"]
    assert [f.streak for f in slow] == [0, 0, 1, 2, 3]
    assert slow[2].event_uid is None and slow[3].event_uid == slow[4].event_uid is not None
    check = slow[2].checks[0]
    assert check.history_median == pytest.approx(700.0) and check.history_runs == 2  # it got slow: it used to be fine
    assert check.fleet.peers == 8
    flaky = [f for f in findings if f.gpu_index == 7]
    assert max(f.streak for f in flaky) == 1 and all(f.event_uid is None for f in flaky)


def test_a_single_gpu_fleet_gets_no_verdict() -> None:
    findings = evaluate(history({("solo", 0): [1.0, 1.0, 1.0, 0.8, 0.8]}))
    assert all(f.severity is None and f.streak == 0 for f in findings)
    assert findings[-1].checks[0].history_median == pytest.approx(700.0)  # the evidence is still there


# -- refresh over a real store ------------------------------------------------------------------


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with migrated(store_url) as e:
        yield e


def _fleet(engine: Engine, nodes: int = 2, gpus: int = 4) -> dict[tuple[int, int], tuple[int, int]]:
    out = {}
    with engine.begin() as conn:
        for n in range(nodes):
            node_id = conn.execute(insert(Node).returning(Node.id), {"name": f"node-{n}", "first_seen": T0,
                                                                      "last_seen": T0}).scalar_one()
            for g in range(gpus):
                out[(n, g)] = (node_id, conn.execute(insert(Gpu).returning(Gpu.id), {
                    "node_id": node_id, "index": g, "uuid": f"GPU-{n}-{g}", "model": ENV["device_model"],
                    "first_seen": T0, "last_seen": T0}).scalar_one())
    return out


def _night(engine: Engine, fleet: dict[tuple[int, int], tuple[int, int]], night: int, slow: float) -> None:
    with engine.begin() as conn:
        for (n, g), (node_id, gpu_id) in fleet.items():
            value = 700.0 * (slow if (n, g) == (1, 2) else 1.0) * (1 + 0.002 * g)
            at = T0 + night * DAY + 60 * g
            save_run(conn, node_id=node_id, gpu_id=gpu_id, workload="gemm", started_at=at, finished_at=at + 30,
                     config=CONFIG, environment=ENV, results=[{"metric": "tflops", "unit": "TFLOP/s", "value": value}])


def _events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(Event).where(Event.kind == "bench_slow").order_by(Event.ts)))


def test_refresh_raises_bench_slow_after_two_failing_runs_once(engine: Engine) -> None:
    fleet = _fleet(engine)
    _night(engine, fleet, 0, 0.85)
    refresh(engine, now=T0 + 0.5 * DAY)
    assert _events(engine) == []  # one failing run is not enough
    _night(engine, fleet, 1, 0.85)
    latest = refresh(engine, now=T0 + 1.5 * DAY)
    slow = next(f for f in latest if f.gpu_index == 2 and f.node == "node-1")
    assert slow.severity == "fail" and slow.streak == 2
    (event,) = _events(engine)
    node_id, gpu_id = fleet[(1, 2)]
    assert (event.node_id, event.gpu_id, event.gpu_index, event.severity, event.code) == (
        node_id, gpu_id, 2, "warning", "gemm")
    assert event.uid == slow.event_uid and event.ts == slow.started_at and event.source == "planner"
    assert "node-1 GPU 2: gemm ran at 85% of the fleet's pace for 2 runs in a row" in event.message
    evidence = event.details["checks"][-1][0]
    assert evidence["metric"] == "tflops" and evidence["peers"] == 8 and evidence["severity"] == "fail"
    assert evidence["robust_z"] > 3.5 and evidence["history_runs"] == 1
    assert len(event.details["runs"]) == 2

    refresh(engine, now=T0 + 1.5 * DAY)  # idempotent
    _night(engine, fleet, 2, 0.85)
    refresh(engine, now=T0 + 2.5 * DAY)  # the same streak: no second event
    assert len(_events(engine)) == 1
    _night(engine, fleet, 3, 1.0)  # recovered ...
    _night(engine, fleet, 4, 0.85)
    _night(engine, fleet, 5, 0.85)  # ... and slow again twice: a new streak, a new event
    refresh(engine, now=T0 + 5.5 * DAY)
    refresh(engine, now=T0 + 5.5 * DAY)
    assert len(_events(engine)) == 2
    # A lookback that starts inside the first streak does not raise it again.
    refresh(engine, now=T0 + 2.5 * DAY, lookback=1.2 * DAY)
    assert len(_events(engine)) == 2
