"""The one protocol every benchmark workload implements, and the types its results travel in.

A workload is a small module with one object implementing :class:`Workload`. It turns a suite name
into parameter sets (``params``), and runs one parameter set (``run``) into a
:class:`WorkloadResult` of :class:`Metric` rows, timing its hot loop with
:func:`agent.workloads.harness.measure` so every workload shares the same method (warm-up outside
the timed region, synchronised clocks, adaptive iteration count, raw samples kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SUITES = ("quick", "standard", "full")


@dataclass(slots=True)
class Stats:
    """Summary of per-iteration samples (seconds, or whatever unit the caller timed)."""

    samples: list[float]
    median: float
    p90: float
    p99: float
    iqr: float
    cv: float  # standard deviation / mean
    mean: float

    @property
    def count(self) -> int:
        return len(self.samples)


@dataclass(slots=True)
class Metric:
    """One stored result row (``bench_results``): a headline ``value`` and, when it was timed per
    iteration, the distribution behind it (``samples`` in ``unit``)."""

    name: str
    unit: str
    value: float | None
    median: float | None = None
    p90: float | None = None
    p99: float | None = None
    iqr: float | None = None
    cv: float | None = None
    count: int | None = None
    samples: list[float] | None = None
    gpu_index: int | None = None  # which local GPU, when the workload ran on one

    def row(self) -> dict[str, Any]:
        """The ``bench_results`` columns (without run and GPU ids)."""
        return {"metric": self.name, "unit": self.unit, "value": self.value, "median": self.median,
                "p90": self.p90, "p99": self.p99, "iqr": self.iqr, "cv": self.cv, "count": self.count,
                "samples": self.samples}


@dataclass(slots=True)
class RunContext:
    device: str  # "cpu", "cuda" or "cuda:N"
    suite: str  # one of SUITES
    scratch_dir: Path  # where a workload may write files (the storage workload); cleaned by the caller
    budget_s: float = 10.0  # time budget for one parameter set's timed region
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None: torch's default


@dataclass(slots=True)
class WorkloadResult:
    workload: str
    params: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "loss fell 10.4 -> 6.1", "p99 low-confidence"

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)


class Workload(Protocol):
    name: str  # e.g. "gemm"
    description: str  # one line: what it measures and how to read it

    def params(self, suite: str, device: str) -> Sequence[dict[str, Any]]:
        """The parameter sets this suite runs on this device (tiny for ``quick``)."""
        ...

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        """Run one parameter set. Raise nothing for a workload-level failure: return status failed."""
        ...
