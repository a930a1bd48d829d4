"""Rules x store → the conditions true now (``Condition``: labels, annotations, value, since).

``evaluate`` reads; it writes nothing. ``lifecycle.apply`` turns its conditions into alerts. Each
rule costs one or two statements over a recent window of the fleet (never one per GPU), in one
connection; ``since`` comes from the data, so a restarted controller keeps its ``for`` timers.

Kinds and where they live: ``threshold``, ``rate``, ``idle_allocated`` (``alerts.series``),
``event`` (``alerts.event_rules``), ``absence`` (``alerts.absence``), ``bench`` (here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from alerts.absence import absence
from alerts.conditions import Condition, Context
from alerts.event_rules import event
from alerts.rules import Bench, Rule
from alerts.series import idle_allocated, rate, threshold
from db.models import BenchResult, BenchRun
from db.stragglers import comparable_key, judge

__all__ = ["Condition", "evaluate"]


def evaluate(engine: Engine, rules: Sequence[Rule], now: float | None = None) -> list[Condition]:
    """Every condition of ``rules`` true at ``now`` (default: the current time), reading only data
    at or before ``now``. A database error propagates: a rule that could not be evaluated must not
    look like a rule whose conditions all cleared."""
    now = time.time() if now is None else now
    out: list[Condition] = []
    with engine.connect() as conn:
        ctx = Context(conn, now)
        for rule in rules:
            out.extend(EVALUATORS[rule.kind](ctx, rule))
    return out


def bench(ctx: Context, rule: Rule) -> list[Condition]:
    """Each GPU's latest ok result per comparable group (workload, parameters, metric, fingerprint)
    within the lookback, judged against the fleet's latest comparable results (``db.stragglers``)."""
    spec = rule.spec
    assert isinstance(spec, Bench)
    gpu = func.coalesce(BenchResult.gpu_id, BenchRun.gpu_id)
    q = (select(gpu.label("gpu_id"), BenchRun.id.label("run_id"), BenchRun.workload, BenchResult.metric,
                BenchResult.unit, BenchResult.value, BenchRun.started_at, BenchRun.config, BenchRun.environment)
         .join(BenchRun, BenchRun.id == BenchResult.run_id)
         .where(BenchRun.status == "ok", BenchRun.started_at > ctx.now - spec.lookback,
                BenchRun.started_at <= ctx.now, BenchResult.value.is_not(None), gpu.is_not(None))
         .order_by(BenchRun.started_at, BenchResult.id))
    if spec.workloads:
        q = q.where(BenchRun.workload.in_(spec.workloads))
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    run_keys: dict[tuple[int, str], tuple[Any, ...]] = {}  # a run's parameters and fingerprint, once per run
    for r in ctx.conn.execute(q):
        ref = ctx.gpus.get(r.gpu_id)
        if ref is None:
            continue
        env = r.environment if isinstance(r.environment, dict) else {}
        row = {"gpu_id": r.gpu_id, "workload": r.workload, "metric": r.metric, "unit": r.unit, "value": r.value,
               "status": "ok", "started_at": r.started_at, "gpu_model": ref.model or env.get("gpu_model") or "unknown",
               "config": r.config, "environment": env}
        part = run_keys.get((r.run_id, row["gpu_model"]))
        if part is None:
            part = run_keys[(r.run_id, row["gpu_model"])] = comparable_key({**row, "metric": ""})[2:]
        row["comparable"] = (r.workload, r.metric, *part)
        latest[(r.gpu_id, *row["comparable"])] = row
    rows = list(latest.values())
    out = []
    for row, verdict in zip(rows, judge(rows, spec.factor, spec.min_peers), strict=True):
        if not verdict.straggler:
            continue
        out.append(ctx.condition(rule, gpu_id=row["gpu_id"], since=row["started_at"], value=row["value"],
                                 labels={"workload": row["workload"], "metric": row["metric"]}, context={
                                     "workload": row["workload"], "metric": row["metric"], "unit": row["unit"] or "",
                                     "median": verdict.fleet_median, "peers": verdict.peers,
                                     "ratio": verdict.ratio, "threshold": spec.factor}))
    return out


EVALUATORS: dict[str, Callable[[Context, Rule], list[Condition]]] = {
    "threshold": threshold, "rate": rate, "event": event, "absence": absence, "bench": bench,
    "idle_allocated": idle_allocated,
}
