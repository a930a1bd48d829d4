"""The timing method shared by every workload.

Warm-up runs outside the timed region; the clock is read only after the device has finished
(``torch.cuda.synchronize`` and CUDA events on a GPU); iterations continue until the spread is small
(IQR / median under ``target_rel_iqr`` after ``min_iters``) or the time budget ends; every
per-iteration sample is kept. The garbage collector is paused while timing (as ``timeit`` and
``torch.utils.benchmark`` do), so a collection triggered by the caller's allocations does not land
in one sample.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence

from agent.workloads.base import Metric, Stats


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``q`` in 0..100."""
    return _at(sorted(values), q)


def _at(xs: Sequence[float], q: float) -> float:
    """``percentile`` of already sorted ``xs`` (callers needing several sort once)."""
    if not xs:
        raise ValueError("no samples")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> Stats:
    xs = list(samples)
    ordered = sorted(xs)
    mean = statistics.fmean(xs)
    sd = statistics.pstdev(xs) if len(xs) > 1 else 0.0
    return Stats(samples=xs, median=_at(ordered, 50), p90=_at(ordered, 90), p99=_at(ordered, 99),
                 iqr=_at(ordered, 75) - _at(ordered, 25), cv=sd / mean if mean else 0.0, mean=mean)


def _settled(samples: Sequence[float], target_rel_iqr: float) -> bool:
    """Whether IQR / median is within ``target_rel_iqr``: the stop test ``measure`` makes after every
    sample, so it sorts once and skips the rest of ``summarize``."""
    ordered = sorted(samples)
    median = _at(ordered, 50)
    return median > 0 and (_at(ordered, 75) - _at(ordered, 25)) / median <= target_rel_iqr


def _cuda_timer(device: str) -> Callable[[Callable[[], object]], float] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    def timed(fn: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0

    return timed


def measure(fn: Callable[[], object], *, device: str = "cpu", warmup: int = 3, min_iters: int = 5,
            max_iters: int = 1000, budget_s: float = 10.0, target_rel_iqr: float = 0.05,
            inner: int = 1, setup: Callable[[], object] | None = None) -> Stats:
    """Time ``fn`` per call (seconds). ``inner`` calls are made per sample and the sample divided by
    ``inner``, for operations too short to time one by one. ``setup`` runs before every sample,
    outside the timed region (e.g. dropping a file from the page cache). ``min_iters == max_iters``
    gives exactly that many samples whatever the spread or budget (collectives need every rank to
    iterate the same number of times)."""
    cuda = _cuda_timer(device)
    sync = _sync(device)

    def body() -> None:
        for _ in range(inner):
            fn()

    for _ in range(warmup):
        if setup is not None:
            setup()
        body()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while len(samples) < max_iters:
            if setup is not None:
                setup()
                sync()
            if cuda is not None:
                samples.append(cuda(body) / inner)
            else:
                t0 = time.perf_counter()
                body()
                samples.append((time.perf_counter() - t0) / inner)
            if len(samples) >= min_iters:
                if len(samples) >= 2 * min_iters and _settled(samples, target_rel_iqr):
                    break
                if time.perf_counter() >= deadline:
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(samples)


def auto_inner(fn: Callable[[], object], *, device: str = "cpu", target_s: float = 1e-2, cap: int = 10_000) -> int:
    """How many calls of ``fn`` make one sample last about ``target_s``: a sample shorter than the
    clock's and the loop's own cost would mostly measure those, and millisecond samples carry the
    scheduler's jitter (10 ms samples keep the CV of a quiet CPU near 1%). Calls ``fn`` twice (a
    warm-up and a probe)."""
    fn()
    sync = _sync(device)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    took = time.perf_counter() - t0
    return max(1, min(cap, math.ceil(target_s / took))) if took > 0 else cap


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize

    def nothing() -> None:
        return None

    return nothing


def time_metric(stats: Stats, name: str = "time", *, gpu_index: int | None = None) -> Metric:
    """The per-iteration times as a result row, raw samples included."""
    return Metric(name=name, unit="s", value=stats.median, median=stats.median, p90=stats.p90, p99=stats.p99,
                  iqr=stats.iqr, cv=stats.cv, count=stats.count, samples=list(stats.samples), gpu_index=gpu_index)


def rate_metric(stats: Stats, name: str, unit: str, work: float, *, gpu_index: int | None = None) -> Metric:
    """``work`` per second (work / time) as a result row. The value and median are the rate at the
    median time; p90 and p99 are the rate at the 90th/99th-percentile time, i.e. the slow tail (so a
    lower p90 than median is normal); the IQR and CV are those of the per-iteration rates. The raw
    samples stay with the time row, not repeated here."""
    rates = [work / t for t in stats.samples if t > 0]
    spread = summarize(rates) if rates else None
    return Metric(name=name, unit=unit, value=work / stats.median if stats.median > 0 else None,
                  median=work / stats.median if stats.median > 0 else None,
                  p90=work / stats.p90 if stats.p90 > 0 else None, p99=work / stats.p99 if stats.p99 > 0 else None,
                  iqr=spread.iqr if spread else None, cv=spread.cv if spread else None, count=stats.count,
                  gpu_index=gpu_index)
