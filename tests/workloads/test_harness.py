"""The shared timing method: percentiles, summaries, adaptive and fixed iteration counts, rates."""

from __future__ import annotations

import gc
import time

import pytest

from agent.workloads.harness import auto_inner, measure, percentile, rate_metric, summarize, time_metric


def test_percentile_matches_numpy_linear_method() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 4.0
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 90) == pytest.approx(3.7)  # numpy.percentile([1,2,3,4], 90) == 3.7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_reports_spread() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s.median == 3.0 and s.count == 5 and s.mean == 4.0
    assert s.iqr == pytest.approx(2.0)  # p75 4 - p25 2
    assert s.cv == pytest.approx((sum((x - 4) ** 2 for x in [1, 2, 3, 4, 10]) / 5) ** 0.5 / 4)
    assert s.p90 == pytest.approx(7.6) and s.p99 == pytest.approx(9.76)


def test_measure_stops_early_when_stable_and_keeps_every_sample() -> None:
    calls = []
    stats = measure(lambda: calls.append(1), warmup=2, min_iters=5, max_iters=1000, budget_s=5.0,
                    target_rel_iqr=10.0)
    assert stats.count == 10  # stable at once: stops at 2 x min_iters
    assert len(calls) == 2 + 10  # warm-up calls are not samples
    assert all(t >= 0 for t in stats.samples)


def test_measure_fixed_count_ignores_budget_and_spread() -> None:
    stats = measure(lambda: time.sleep(0.001), warmup=0, min_iters=7, max_iters=7, budget_s=0.0,
                    target_rel_iqr=0.0)
    assert stats.count == 7


def test_measure_budget_ends_a_noisy_run() -> None:
    n = iter(range(10**6))
    t0 = time.perf_counter()
    stats = measure(lambda: time.sleep(0.002 if next(n) % 2 else 0.0), warmup=0, min_iters=3, budget_s=0.1,
                    target_rel_iqr=0.0)
    assert time.perf_counter() - t0 < 2.0 and stats.count >= 3


def test_setup_runs_outside_the_timed_region_and_gc_is_restored() -> None:
    assert gc.isenabled()
    stats = measure(lambda: None, setup=lambda: time.sleep(0.02), warmup=1, min_iters=3, max_iters=3)
    assert max(stats.samples) < 0.01  # the 20 ms of setup are not in any sample
    assert gc.isenabled()


def test_inner_divides_the_sample() -> None:
    stats = measure(lambda: time.sleep(0.001), warmup=0, min_iters=3, max_iters=3, inner=5)
    assert 0.001 <= stats.median < 0.01
    assert auto_inner(lambda: None, target_s=1e-3) > 1  # a no-op needs many calls per sample
    assert auto_inner(lambda: time.sleep(0.002), target_s=1e-3) == 1


def test_rate_metric_is_work_over_time_with_the_slow_tail_as_p90() -> None:
    stats = summarize([1.0, 2.0, 2.0, 2.0, 4.0])
    m = rate_metric(stats, "tflops", "TFLOP/s", 10.0)
    assert m.value == m.median == 5.0
    assert m.p90 == pytest.approx(10.0 / stats.p90) and m.p90 < m.median  # the rate at the slow time
    assert m.samples is None and m.count == 5
    t = time_metric(stats)
    assert t.unit == "s" and t.samples == [1.0, 2.0, 2.0, 2.0, 4.0] and t.value == 2.0
