"""Rules over each GPU's sample series: ``threshold``, ``rate`` and ``idle_allocated``.

Each rule is two statements driven by the inventory: an index seek on (gpu_id, ts) per GPU finds
its newest sample, and only the GPUs whose newest sample is in trouble have their window read, so a
cycle costs about the fleet's GPU count, not its samples. A condition over samples holds when the
newest (fresh) sample satisfies it; it began (``since``) at the first sample after the newest one
that did not, so ``for`` is Prometheus' "held at every evaluation for that long", computed from the
data instead of remembered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from alerts.conditions import STALE_SECONDS, Condition, Context, numeric
from alerts.rules import IdleAllocated, Rate, Rule, Threshold
from alerts.templates import duration
from db.hostlist import expand_hostlist
from db.models import Job

_CMP = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def lookback(rule: Rule) -> float:
    """How far back a ``for`` rule reads: ``for`` plus the staleness margin. A condition older than
    that gets the start of the lookback as ``since`` (it has held for ``for`` either way); the
    alert it already has keeps its earlier ``active_since``."""
    return rule.for_seconds + STALE_SECONDS


def runs(ctx: Context, hit: str, params: dict[str, Any], window: float,
         latest: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per GPU whose newest sample (fresh) satisfies the SQL predicate ``hit`` (over bare
    gpu_samples columns): ``gpu_id``, ``since`` (the first sample of the current unbroken run of
    hits within ``window``), ``last_ts``, and the ``latest`` expressions (over alias ``s``) at the
    newest sample.

    A sample whose columns are NULL (a lost GPU) is a miss: it breaks the run.
    """
    extra = "".join(f", {expr} AS x{i}" for i, expr in enumerate(latest))
    miss = f"CASE WHEN {hit} THEN 0 ELSE 1 END = 1"
    sql = f"""
        WITH n AS MATERIALIZED (
            SELECT g.id AS gpu_id, (SELECT MAX(t.ts) FROM gpu_samples t WHERE t.gpu_id = g.id
                                    AND t.ts > :fresh AND t.ts <= :now) AS last_ts
            FROM gpus g WHERE g.first_seen <= :now
        )
        SELECT n.gpu_id, n.last_ts{extra},
            (SELECT MIN(w.ts) FROM gpu_samples w WHERE w.gpu_id = n.gpu_id AND w.ts > :lo) AS first_ts,
            (SELECT MAX(w.ts) FROM gpu_samples w WHERE w.gpu_id = n.gpu_id AND w.ts > :lo AND w.ts <= :now
                AND {miss}) AS last_miss
        FROM n CROSS JOIN gpu_samples s
        WHERE s.gpu_id = n.gpu_id AND s.ts = n.last_ts AND {hit}
    """
    bound = {**params, "lo": ctx.now - window, "now": ctx.now, "fresh": ctx.now - STALE_SECONDS}
    rows = [dict(r._mapping) for r in ctx.conn.execute(text(sql), bound)]
    # The run began at the first sample after the newest miss: one index seek per GPU in trouble.
    misses = [(r["gpu_id"], r["last_miss"]) for r in rows if r["last_miss"] is not None]
    after: dict[int, float] = {}
    for chunk in range(0, len(misses), 200):
        part = misses[chunk:chunk + 200]
        union = " UNION ALL ".join(
            f"SELECT CAST(:g{n} AS BIGINT) AS gpu_id, (SELECT MIN(w.ts) FROM gpu_samples w "
            f"WHERE w.gpu_id = :g{n} AND w.ts > :m{n}) AS since" for n in range(len(part)))
        values: dict[str, Any] = {}
        for n, (gpu_id, last_miss) in enumerate(part):
            values[f"g{n}"], values[f"m{n}"] = gpu_id, last_miss
        after.update({g: t for g, t in ctx.conn.execute(text(union), values)})
    out = []
    for r in rows:
        since = r["first_ts"] if r["last_miss"] is None else after.get(r["gpu_id"], r["last_ts"])
        out.append({"gpu_id": r["gpu_id"], "since": since, "last_ts": r["last_ts"],
                    **{f"x{i}": r[f"x{i}"] for i in range(len(latest))}})
    return out


# -- threshold ----------------------------------------------------------------------------------


def threshold(ctx: Context, rule: Rule) -> list[Condition]:
    spec = rule.spec
    assert isinstance(spec, Threshold)
    col = numeric(spec.column)
    if spec.value_ref is not None:
        bound = f":factor * {numeric(spec.value_ref)}"
        params: dict[str, Any] = {"factor": spec.factor}
        latest = [numeric(spec.column, "s"), f":factor * {numeric(spec.value_ref, 's')}"]
    else:
        bound = ":value"
        params = {"value": spec.value}
        latest = [numeric(spec.column, "s")]
    rows = runs(ctx, f"{col} {spec.op} {bound}", params, lookback(rule), latest)
    out = []
    for r in rows:
        if r["gpu_id"] not in ctx.gpus:
            continue
        limit = r["x1"] if spec.value_ref is not None else spec.value
        value = None if r["x0"] is None else float(r["x0"])
        out.append(ctx.condition(rule, gpu_id=r["gpu_id"], since=r["since"], value=value,
                                 context={"threshold": limit, "column": spec.column}))
    return out


# -- rate ---------------------------------------------------------------------------------------

BASELINE_SECONDS = 120.0  # the last sample before the window (within this) is the increase's baseline


def increase(points: Sequence[tuple[float, float]], start: float) -> tuple[float, list[tuple[float, float]]]:
    """The increase of a counter over the points after ``start`` and the running increase at each of
    them. The last point at or before ``start`` is the baseline; a drop is a reset, after which the
    counter counts from zero (as Prometheus' ``increase``, without extrapolation)."""
    prev = None
    for ts, v in points:
        if ts <= start:
            prev = v
    total, running = 0.0, []
    for ts, v in points:
        if ts <= start:
            continue
        if prev is not None:
            total += v - prev if v >= prev else v
        running.append((ts, total))
        prev = v
    return total, running


def rate(ctx: Context, rule: Rule) -> list[Condition]:
    spec = rule.spec
    assert isinstance(spec, Rate)
    col = numeric(spec.column)
    lo = ctx.now - spec.window
    params = {"lo": lo, "base": lo - BASELINE_SECONDS, "now": ctx.now, "fresh": ctx.now - STALE_SECONDS}
    # An increase-above rule only concerns counters that moved: the first and last value of the
    # window differ (two index seeks per GPU). Other comparisons read every GPU's window.
    if spec.op in (">", ">=") and spec.value >= 0:
        candidates = [r[0] for r in ctx.conn.execute(text(f"""
            SELECT g.id,
                (SELECT {col} FROM gpu_samples s WHERE s.gpu_id = g.id AND s.ts > :base AND s.ts <= :now
                    AND {col} IS NOT NULL ORDER BY s.ts LIMIT 1) AS first_v,
                (SELECT {col} FROM gpu_samples s WHERE s.gpu_id = g.id AND s.ts > :fresh AND s.ts <= :now
                    AND {col} IS NOT NULL ORDER BY s.ts DESC LIMIT 1) AS last_v
            FROM gpus g WHERE g.first_seen <= :now"""), params) if r[1] is not None and r[2] is not None
            and r[1] != r[2]]
    else:
        candidates = list(ctx.gpus)
    # The increase (resets counted as Prometheus does, see ``increase``) and, for increase-above
    # rules, when the running increase first crossed the threshold, computed in the database: an
    # hour of 10 s samples is 360 rows per GPU that need not travel.
    crossing = {">": ">", ">=": ">="}.get(spec.op)
    first_cross = f"MIN(CASE WHEN running {crossing} :value THEN ts END)" if crossing else "NULL"
    # The running increase only matters for when an increase-above rule first crossed.
    running = ("SUM(inc) OVER (PARTITION BY gpu_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
               if crossing else "NULL")
    out = []
    test = _CMP[spec.op]
    for chunk in _chunks(candidates, 500):
        ids = ", ".join(str(int(g)) for g in chunk)
        sql = f"""
            WITH p AS (
                SELECT gpu_id, ts, {col} AS v, LAG({col}) OVER (PARTITION BY gpu_id ORDER BY ts) AS prev
                FROM gpu_samples WHERE gpu_id IN ({ids}) AND ts > :base AND ts <= :now AND {col} IS NOT NULL
            ), d AS (
                SELECT gpu_id, ts, CASE WHEN prev IS NULL THEN 0 WHEN v >= prev THEN v - prev ELSE v END AS inc
                FROM p WHERE ts > :lo
            ), r AS (
                SELECT gpu_id, ts, inc, {running} AS running FROM d
            )
            SELECT gpu_id, MAX(ts), SUM(inc), {first_cross} FROM r GROUP BY gpu_id"""
        for gpu_id, last_ts, total, crossed in ctx.conn.execute(text(sql), {**params, "value": spec.value}):
            if gpu_id not in ctx.gpus or last_ts <= max(lo, ctx.now - STALE_SECONDS):
                continue  # nothing in the window, or a stale series
            total = float(total)
            if not test(total, spec.value):
                continue
            since = float(crossed) if crossing and crossed is not None else float(last_ts)
            out.append(ctx.condition(rule, gpu_id=gpu_id, since=since, value=total,
                                     context={"threshold": spec.value, "column": spec.column,
                                              "window": duration(spec.window)}))
    return out


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# -- idle but allocated -------------------------------------------------------------------------


def running_jobs(ctx: Context) -> list[dict[str, Any]]:
    """Jobs running at ``now`` that say where they run (``node_list``)."""
    if "jobs" not in ctx.cache:
        q = (Job.__table__.select()
             .where(Job.start_ts <= ctx.now, (Job.end_ts.is_(None)) | (Job.end_ts > ctx.now),
                    Job.node_list.is_not(None))
             .order_by(Job.start_ts, Job.id))  # the first job of a node names its alerts: keep it stable
        ctx.cache["jobs"] = [dict(r._mapping) for r in ctx.conn.execute(q)]
    jobs: list[dict[str, Any]] = ctx.cache["jobs"]
    return jobs


def idle_allocated(ctx: Context, rule: Rule) -> list[Condition]:
    """Processes: a process on the GPU and utilization below the threshold at every sample for
    ``for``. Jobs: the GPU's node runs a job and the GPU is below the threshold; on a node the
    running jobs hold only in part, only GPUs with a process count (which GPUs a job holds is not
    in the jobs table)."""
    spec = rule.spec
    assert isinstance(spec, IdleAllocated)
    jobs = running_jobs(ctx) if spec.source in ("auto", "jobs") else []
    use_jobs = spec.source == "jobs" or (spec.source == "auto" and bool(jobs))
    idle = "status = 'ok' AND utilization_gpu_ratio < :u"
    latest = ["s.utilization_gpu_ratio", "s.process_count"]
    common = {"threshold": spec.utilization}
    out = []
    if not use_jobs:
        for r in runs(ctx, f"{idle} AND process_count > 0", {"u": spec.utilization}, lookback(rule), latest):
            if r["gpu_id"] in ctx.gpus:
                out.append(ctx.condition(rule, gpu_id=r["gpu_id"], since=r["since"], value=r["x0"], context={
                    **common, "source": "processes", "holder": f"{r['x1']} process(es)"}))
        return out
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        for host in expand_hostlist(job["node_list"]):
            by_node[host].append(job)
    per_node: dict[int, int] = defaultdict(int)
    for ref in ctx.gpus.values():
        per_node[ref.node_id] += 1
    for r in runs(ctx, idle, {"u": spec.utilization}, lookback(rule), latest):
        gpu = ctx.gpus.get(r["gpu_id"])
        held = by_node.get(gpu.node, []) if gpu is not None else []
        if gpu is None or not held:
            continue
        shares = [_gpus_per_node(j) for j in held]
        whole = any(s is None for s in shares) or sum(s or 0 for s in shares) >= per_node[gpu.node_id]
        if not whole and not (r["x1"] or 0) > 0:
            continue
        job = held[0]
        since = max(r["since"], max(j["start_ts"] for j in held))
        holder = ", ".join(f"job {j['external_id']}" + (f" ({j['user']})" if j["user"] else "") for j in held)
        out.append(ctx.condition(rule, gpu_id=r["gpu_id"], since=since, value=r["x0"],
                                 labels={"job_id": str(job["external_id"])}, context={
                                     **common, "source": "jobs", "holder": holder,
                                     "job_id": job["external_id"], "user": job["user"]}))
    return out


def _gpus_per_node(job: dict[str, Any]) -> float | None:
    """The GPUs a job holds on each of its nodes; None when the jobs table does not say."""
    if job["gpus"] is None:
        return None
    return float(job["gpus"]) / max(1, int(job["nodes"] or 1))
