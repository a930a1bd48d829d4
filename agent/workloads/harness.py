"""The timing method shared by every workload.

Warm-up runs outside the timed region; the clock is read only after the device has finished
(``torch.cuda.synchronize`` and CUDA events on a GPU); iterations continue until the spread is small
(IQR / median under ``target_rel_iqr`` after ``min_iters``) or the time budget ends; every
per-iteration sample is kept.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

from agent.workloads.base import Stats


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``q`` in 0..100."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no samples")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> Stats:
    xs = list(samples)
    mean = statistics.fmean(xs)
    median = statistics.median(xs)
    sd = statistics.pstdev(xs) if len(xs) > 1 else 0.0
    return Stats(samples=xs, median=median, p90=percentile(xs, 90), p99=percentile(xs, 99),
                 iqr=percentile(xs, 75) - percentile(xs, 25), cv=sd / mean if mean else 0.0, mean=mean)


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
            inner: int = 1) -> Stats:
    """Time ``fn`` per call (seconds). ``inner`` calls are made per sample and the sample divided by
    ``inner``, for operations too short to time one by one."""
    cuda = _cuda_timer(device)
    if device.startswith("cuda"):
        import torch

        sync: Callable[[], None] = torch.cuda.synchronize
    else:
        def sync() -> None:
            return None

    def body() -> None:
        for _ in range(inner):
            fn()

    for _ in range(warmup):
        body()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_iters:
        if cuda is not None:
            samples.append(cuda(body) / inner)
        else:
            t0 = time.perf_counter()
            body()
            samples.append((time.perf_counter() - t0) / inner)
        if len(samples) >= min_iters:
            s = summarize(samples)
            if s.median > 0 and s.iqr / s.median <= target_rel_iqr and len(samples) >= 2 * min_iters:
                break
            if time.perf_counter() >= deadline:
                break
    return summarize(samples)
