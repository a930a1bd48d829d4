"""How often infrastructure kills jobs, what that means for a job on N nodes, and how often it
should checkpoint.

Failures are counted per node-day of exposure, so a rate measured on small jobs carries over to a
large one: a job on N nodes sees N times the rate, so its mean time to failure is
MTTF = 1 / (N · rate). The checkpoint interval that minimises lost work plus checkpoint overhead is
Young's first-order optimum (refined by Daly), sqrt(2 · C · MTTF) for a checkpoint that takes C.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

# Failure categories that are the fleet's fault, not the job's (DESIGN.md's categories).
INFRASTRUCTURE = ("gpu-hardware", "interconnect", "host")
NODE_DAY = 86400.0


def failure_rate_per_1000_node_days(failures: int, node_days: float) -> float | None:
    """Failures per 1,000 node-days of exposure; ``None`` without exposure."""
    return 1000.0 * failures / node_days if node_days > 0 else None


def mttf_seconds(rate_per_1000_node_days: float, nodes: int) -> float | None:
    """Mean time to failure of a job on ``nodes`` nodes: 1 / (N · rate); ``None`` for a zero rate
    (no failure seen: the MTTF is unbounded by the data)."""
    if nodes < 1:
        raise ValueError("a job needs at least one node")
    per_node_second = rate_per_1000_node_days / 1000.0 / NODE_DAY
    return 1.0 / (nodes * per_node_second) if per_node_second > 0 else None


def young_daly_interval_seconds(checkpoint_cost_seconds: float, mttf: float) -> float:
    """Checkpoint interval sqrt(2 · C · MTTF) (Young 1974, Daly 2006 first order)."""
    if checkpoint_cost_seconds < 0 or mttf <= 0:
        raise ValueError("checkpoint cost must be >= 0 and MTTF > 0")
    return math.sqrt(2.0 * checkpoint_cost_seconds * mttf)


@dataclass(frozen=True, slots=True)
class FailureRate:
    failures: int
    node_days: float

    @property
    def per_1000_node_days(self) -> float | None:
        return failure_rate_per_1000_node_days(self.failures, self.node_days)


def job_node_days(jobs: pd.DataFrame) -> float:
    """Node-days the jobs ran (nodes × run time; a job with unknown node count counts one node)."""
    seconds = (jobs["end_ts"].astype(float) - jobs["start_ts"].astype(float)).clip(lower=0).fillna(0.0)
    return float((jobs["nodes"].astype(float).fillna(1.0) * seconds).sum() / NODE_DAY)


def job_failure_rate(jobs: pd.DataFrame, categories: Sequence[str] = INFRASTRUCTURE) -> FailureRate:
    """Jobs that ended in one of ``categories`` per node-day that all the jobs ran."""
    failures = int(jobs["category"].isin(list(categories)).sum())
    return FailureRate(failures, job_node_days(jobs))


def reliability_table(rate_per_1000_node_days: float, checkpoint_cost_seconds: float,
                      node_counts: Sequence[int] = (1, 8, 64, 512)) -> list[dict[str, float | int | None]]:
    """Per job size: MTTF and the Young–Daly checkpoint interval, both in seconds."""
    rows: list[dict[str, float | int | None]] = []
    for n in node_counts:
        m = mttf_seconds(rate_per_1000_node_days, n)
        rows.append({"nodes": n, "mttf_seconds": m,
                     "checkpoint_interval_seconds": None if m is None else
                     young_daly_interval_seconds(checkpoint_cost_seconds, m)})
    return rows
