"""The straggler definition, shared by the dashboard's benchmark pages and the ``bench_slow`` alert.

A result is a straggler when it is below ``ratio`` x the fleet median of its group (same workload,
metric and GPU model), or above median / ``ratio`` for metrics where lower is better (latency,
time). Groups with fewer than ``min_peers`` ok results give no verdict. Pure Python over plain rows,
so the alert evaluator needs neither pandas nor the dashboard.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STRAGGLER_RATIO = 0.9  # below 0.9 x the fleet median (same workload, metric, GPU model)
MIN_PEERS = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    fleet_median: float | None  # median of the group's ok results; None: the group has none
    peers: int  # ok results in the group
    ratio: float | None  # value / fleet_median
    straggler: bool


def higher_is_better(metric: str, unit: str | None) -> bool:
    """Throughput-like metrics are better high; latency and time metrics are better low."""
    words = f"{metric} {unit or ''}".lower()
    return not any(w in words for w in ("latency", "seconds", "time", " ms", " us", " s "))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if v != v else v  # NaN from a data frame is unknown


def judge(rows: Sequence[Mapping[str, Any]], ratio: float = STRAGGLER_RATIO,
          min_peers: int = MIN_PEERS) -> list[Verdict]:
    """One verdict per row, in order. Rows need ``workload``, ``metric``, ``unit``, ``gpu_model``,
    ``value`` and ``status`` (only ``"ok"`` results with a value count and can straggle)."""
    groups: dict[tuple[Any, Any, Any], list[float]] = defaultdict(list)
    keys, values, oks = [], [], []
    for r in rows:
        key = (r["workload"], r["metric"], r["gpu_model"])
        value = _number(r["value"])
        ok = r["status"] == "ok" and value is not None
        if ok:
            groups[key].append(value)  # type: ignore[arg-type]
        keys.append(key)
        values.append(value)
        oks.append(ok)
    medians = {k: statistics.median(v) for k, v in groups.items()}
    out = []
    for r, key, value, ok in zip(rows, keys, values, oks, strict=True):
        median = medians.get(key)
        peers = len(groups.get(key, ()))
        share = value / median if value is not None and median else None
        slow = False
        if ok and share is not None and peers >= min_peers:
            slow = share < ratio if higher_is_better(r["metric"], r["unit"]) else share > 1 / ratio
        out.append(Verdict(median, peers, share, slow))
    return out
