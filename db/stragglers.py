"""The straggler rule: one benchmark result against the fleet's comparable results.

Shared by the dashboard's benchmark page, the ``bench_slow`` alert and ``planner.stragglers`` (which
adds each GPU's own history and raises ``bench_slow`` events after two failing runs in a row), so
that all three call the same result slow. Pure Python over plain rows: the alert evaluator needs
neither pandas nor the dashboard.

- Comparable: same workload, parameters (``bench_runs.config``) and metric, and a fingerprint that
  agrees on what shapes the number (``FINGERPRINT_KEYS``: device model, dtype, torch, driver).
- Speed: the result over the fleet median, inverted for lower-is-better metrics (latency, time), so
  0.9 always means "runs at 90% of the fleet's pace". Metrics with no direction (error sizes, loss,
  flags) are not judged.
- Severity: ``warn`` at 5% below the median, ``fail`` (a straggler) at 10%; also ``warn`` for a
  robust outlier, modified z-score (Iglewicz and Hoaglin: 0.6745 (x - median) / MAD) above 3.5 on the
  slow side, when it is at least 2% off (below that it is run-to-run noise, whatever the z says).
  Fewer than ``MIN_PEERS`` comparable results give no verdict.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WARN_RATIO = 0.95  # at or below 95% of the fleet's speed: warn
STRAGGLER_RATIO = 0.9  # at or below 90%: fail, a straggler (the bench_slow alert's default factor)
Z_LIMIT = 3.5
Z_SCALE = 0.6745  # MAD x 1.4826 estimates the standard deviation of a normal sample
MEAN_AD_SCALE = 1.253314  # when MAD = 0: z = (x - median) / (1.253314 x mean absolute deviation)
NOISE_FLOOR = 0.02  # an outlier by z alone must still be this much slower to count
MIN_PEERS = 3
# The fingerprint keys (``agent.workloads.fingerprint``) whose difference makes two runs incomparable.
FINGERPRINT_KEYS = ("device_model", "dtype", "torch", "driver")
SEVERITIES = (None, "warn", "fail")  # in increasing order

_FASTER_WORDS = ("tflops", "flops", "per_second", "throughput", "bandwidth", "qps", "mfu")
_SLOWER_WORDS = ("latency", "time", "seconds", "duration")


@dataclass(frozen=True, slots=True)
class Verdict:
    fleet_median: float | None  # median of the comparable results; None: there are none
    peers: int  # comparable results the median is over (the judged one included)
    ratio: float | None  # value / fleet_median
    severity: str | None = None  # "warn", "fail", or None (fine, or no verdict)
    speed: float | None = None  # share of the fleet's pace: ratio, or 1 / ratio when lower is better
    z: float | None = None  # modified z-score, positive on the slow side

    @property
    def straggler(self) -> bool:
        return self.severity == "fail"


def direction(metric: str, unit: str | None) -> int | None:
    """+1 when higher is better (rates, MFU), -1 when lower is better (latency, time), None when the
    metric has no "slower" (a loss, an error size, a flag, a count): such results are not judged."""
    name, u = metric.lower(), (unit or "").strip().lower()
    if u.endswith("/s") or any(w in name for w in _FASTER_WORDS):
        return 1
    if u in ("s", "ms", "us", "ns", "seconds") or any(w in name for w in _SLOWER_WORDS):
        return -1
    return None


def higher_is_better(metric: str, unit: str | None) -> bool:
    """Throughput-like metrics are better high; latency and time metrics are better low."""
    return direction(metric, unit) != -1


def fingerprint(environment: Mapping[str, Any] | None, config: Mapping[str, Any] | None = None,
                gpu_model: str | None = None) -> tuple[Any, ...]:
    """The values of ``FINGERPRINT_KEYS`` for one run. The device model falls back to the GPU's
    inventory model (or the environment's ``gpu_model``), the dtype to the run's parameters."""
    env = dict(environment or {})
    env.setdefault("device_model", None)
    if env["device_model"] is None:
        env["device_model"] = gpu_model or env.get("gpu_model")
    if env.get("dtype") is None and config:
        env["dtype"] = config.get("dtype")
    return tuple(_plain(env.get(k)) for k in FINGERPRINT_KEYS)


def params_key(config: Mapping[str, Any] | None) -> str | None:
    """The parameters as one canonical string (runs compare only under equal parameters)."""
    return None if config is None else json.dumps(config, sort_keys=True, default=str)


def comparable_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a result is compared within: workload, metric, parameters and fingerprint. Rows need
    ``workload`` and ``metric``; ``config``, ``environment`` and ``gpu_model`` are used when present."""
    env, config = row.get("environment"), row.get("config")
    env = env if isinstance(env, Mapping) else None  # absent, or NaN from a data frame
    config = config if isinstance(config, Mapping) else None
    return (row["workload"], row["metric"], params_key(config), fingerprint(env, config, _plain(row.get("gpu_model"))))


def spread(values: Sequence[float], median: float) -> tuple[float, float]:
    """(median absolute deviation, mean absolute deviation) of ``values`` around ``median``."""
    deviations = [abs(v - median) for v in values]
    return statistics.median(deviations), statistics.fmean(deviations)


def robust_z(value: float, values: Sequence[float], median: float | None = None,
             spreads: tuple[float, float] | None = None) -> float:
    """Modified z-score of ``value`` among ``values`` (signed: below the median is negative). When
    more than half the values are equal (MAD = 0) the mean absolute deviation stands in; when all
    are equal, a value equal to them scores 0 and any other one infinity. ``spreads`` (from
    ``spread``) saves recomputing them for every member of a group."""
    med = statistics.median(values) if median is None else median
    deviation = value - med
    mad, mean_ad = spread(values, med) if spreads is None else spreads
    if mad > 0:
        return Z_SCALE * deviation / mad
    if mean_ad > 0:
        return deviation / (MEAN_AD_SCALE * mean_ad)
    return 0.0 if deviation == 0 else math.copysign(math.inf, deviation)


def grade(value: float | None, values: Sequence[float], better: int | None, *, fail_ratio: float = STRAGGLER_RATIO,
          warn_ratio: float = WARN_RATIO, min_peers: int = MIN_PEERS,
          group: tuple[float, tuple[float, float]] | None = None) -> Verdict:
    """``value`` judged against ``values`` (the comparable results, normally including it).
    ``group``: the values' median and ``spread``, when the caller grades many members of one group."""
    if not values:
        return Verdict(None, 0, None)
    median = statistics.median(values) if group is None else group[0]
    ratio = value / median if value is not None and median else None
    if value is None or ratio is None or better is None or len(values) < min_peers:
        return Verdict(median, len(values), ratio)
    speed = ratio if better > 0 else (1 / ratio if ratio > 0 else math.inf)
    z = -better * robust_z(value, values, median, None if group is None else group[1])
    severity = None
    if speed <= fail_ratio:
        severity = "fail"
    elif speed <= warn_ratio or (z > Z_LIMIT and speed <= 1 - NOISE_FLOOR):
        severity = "warn"
    return Verdict(median, len(values), ratio, severity, speed, z)


def worst(*severities: str | None) -> str | None:
    return max(severities, key=SEVERITIES.index, default=None)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if v != v else v  # NaN from a data frame is unknown


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value  # NaN from a data frame


def judge(rows: Sequence[Mapping[str, Any]], ratio: float = STRAGGLER_RATIO,
          min_peers: int = MIN_PEERS) -> list[Verdict]:
    """One verdict per row, in order, each against every ok row comparable to it (``comparable_key``,
    or the row's own ``comparable`` when the caller computed it).
    Rows need ``workload``, ``metric``, ``unit``, ``value`` and ``status`` (only ``"ok"`` results with
    a value count and can straggle). ``ratio`` is the fail threshold (warn stays at 5%)."""
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    keys, values, oks = [], [], []
    for r in rows:
        key = r.get("comparable") or comparable_key(r)  # a caller may have computed it once per run
        value = _number(r["value"])
        ok = r["status"] == "ok" and value is not None
        if ok:
            groups[key].append(value)  # type: ignore[arg-type]
        keys.append(key)
        values.append(value)
        oks.append(ok)
    stats: dict[tuple[Any, ...], tuple[float, tuple[float, float]]] = {}
    for key, group in groups.items():
        med = statistics.median(group)
        stats[key] = (med, spread(group, med))
    out = []
    for r, key, value, ok in zip(rows, keys, values, oks, strict=True):
        verdict = grade(value, groups.get(key, []), direction(r["metric"], r["unit"]), fail_ratio=ratio,
                        warn_ratio=max(ratio, WARN_RATIO), min_peers=min_peers, group=stats.get(key))
        out.append(verdict if ok else Verdict(verdict.fleet_median, verdict.peers, verdict.ratio))
    return out
