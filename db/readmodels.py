"""Fleet read models: aggregates over the store for the dashboard (and later the planner).

Every function takes an engine and plain arguments and returns plain rows (dicts), so it can be
tested without a UI and without pandas. Ranges pick their source by length (``source_for``): raw
``gpu_samples`` up to 6 hours, 1-minute rollups up to 3 days, 1-hour rollups beyond, and results
are grouped into at most ~150 buckets in SQL, so a query returns about as many rows for 8 GPUs as
for 8,000. Bucket sizes and thresholds are rendered as SQL literals (they come from the constants
here, never from users) so that PostgreSQL sees the same GROUP BY expression as in the select list;
everything a user chooses is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    Select,
    and_,
    case,
    cast,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from db.models import (
    BenchResult,
    BenchRun,
    DiskSample,
    Event,
    FilesystemSample,
    Gpu,
    GpuProcessSample,
    GpuRollup1h,
    GpuRollup1m,
    GpuSample,
    Heartbeat,
    InterfaceSample,
    Node,
)
from db.rollups import IDLE_UTILIZATION, THROTTLE

RAW_MAX_SECONDS = 6 * 3600
MINUTE_MAX_SECONDS = 3 * 86400
MAX_BUCKETS = 150
BUCKET_LADDER = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# Latest samples are looked for this far back; a GPU with nothing newer is reported down.
CURRENT_LOOKBACK_SECONDS = 3600.0
# Heartbeats this recent give each node's sampling interval.
INTERVAL_LOOKBACK_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # raw | 1m | 1h
    table: Any  # the mapped class read
    resolution: int  # seconds per row (raw rows are bucketed at least per minute)


RAW = Source("raw", GpuSample, 60)
MINUTE = Source("1m", GpuRollup1m, 60)
HOUR = Source("1h", GpuRollup1h, 3600)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which GPUs a view covers: empty tuples mean no restriction."""

    clusters: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.clusters or self.nodes or self.models)


def source_for(seconds: float) -> Source:
    """Raw samples for ranges up to 6 h, 1-minute rollups up to 3 days, 1-hour rollups beyond."""
    if seconds <= RAW_MAX_SECONDS:
        return RAW
    if seconds <= MINUTE_MAX_SECONDS:
        return MINUTE
    return HOUR


def bucket_for(seconds: float, source: Source | None = None) -> int:
    """The smallest bucket from the ladder that keeps a range under ``MAX_BUCKETS`` points."""
    floor = (source or source_for(seconds)).resolution
    for step in BUCKET_LADDER:
        if step >= floor and seconds / step <= MAX_BUCKETS:
            return step
    return BUCKET_LADDER[-1]


def _lit(value: float) -> ColumnElement[Any]:
    return literal_column(repr(value) if isinstance(value, float) else str(int(value)))


def _bucket(ts: Any, step: int) -> ColumnElement[Any]:
    return func.floor(ts / _lit(step)) * _lit(step)


def _rows(engine: Engine, stmt: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


# -- scope and inventory ------------------------------------------------------------------------


def scoped_gpu_ids(scope: Scope) -> Select[Any] | None:
    """A subquery of the GPU ids in ``scope``; ``None`` when the scope is the whole fleet."""
    if not scope:
        return None
    q = select(Gpu.id).join(Node, Node.id == Gpu.node_id)
    if scope.clusters:
        q = q.where(Node.cluster.in_(scope.clusters))
    if scope.nodes:
        q = q.where(Node.name.in_(scope.nodes))
    if scope.models:
        q = q.where(Gpu.model.in_(scope.models))
    return q


def _in_scope(column: Any, scope: Scope) -> list[ColumnElement[bool]]:
    ids = scoped_gpu_ids(scope)
    return [] if ids is None else [column.in_(ids)]


def inventory(engine: Engine, scope: Scope = Scope()) -> list[dict[str, Any]]:
    """Every GPU in scope with its node: the denominator of every fleet count."""
    q = (select(Gpu.id.label("gpu_id"), Gpu.index, Gpu.uuid, Gpu.model, Gpu.memory_total_bytes,
                Gpu.first_seen, Gpu.last_seen, Node.id.label("node_id"), Node.name.label("node"),
                Node.cluster)
         .join(Node, Node.id == Gpu.node_id)
         .where(*_in_scope(Gpu.id, scope))
         .order_by(Node.name, Gpu.index))
    return _rows(engine, q)


def filter_options(engine: Engine) -> list[dict[str, Any]]:
    """(cluster, node, model) combinations present in the store, for the filter widgets."""
    q = (select(Node.cluster, Node.name.label("node"), Gpu.model)
         .select_from(Node).outerjoin(Gpu, Gpu.node_id == Node.id).distinct())
    return _rows(engine, q)


# -- current state ------------------------------------------------------------------------------


def node_intervals(engine: Engine, now: float) -> dict[int, float]:
    """Each node's sampling interval, from its recent heartbeats (one per agent cycle)."""
    q = (select(Heartbeat.node_id, func.count(), func.min(Heartbeat.ts), func.max(Heartbeat.ts))
         .where(Heartbeat.ts > now - INTERVAL_LOOKBACK_SECONDS, Heartbeat.ts <= now)
         .group_by(Heartbeat.node_id))
    with engine.connect() as conn:
        return {node: (hi - lo) / (n - 1) for node, n, lo, hi in conn.execute(q) if n > 1 and hi > lo}


def latest_gpu_samples(engine: Engine, scope: Scope, now: float) -> list[dict[str, Any]]:
    """Each GPU's newest sample no older than ``CURRENT_LOOKBACK_SECONDS``."""
    latest = (select(GpuSample.gpu_id, func.max(GpuSample.ts).label("ts"))
              .where(GpuSample.ts > now - CURRENT_LOOKBACK_SECONDS, GpuSample.ts <= now,
                     *_in_scope(GpuSample.gpu_id, scope))
              .group_by(GpuSample.gpu_id).subquery())
    t = GpuSample.__table__
    return _rows(engine, select(t).join(latest, and_(t.c.gpu_id == latest.c.gpu_id, t.c.ts == latest.c.ts)))


def unresolved_events(engine: Engine, scope: Scope, start: float, end: float) -> list[dict[str, Any]]:
    """Fatal or critical GPU events in [start, end) not followed by a ``gpu_recovered`` event."""
    later = aliased(Event)
    recovered = exists().where(later.gpu_id == Event.gpu_id, later.kind == "gpu_recovered",
                               later.ts > Event.ts, later.ts <= end)
    q = (_event_select()
         .where(Event.ts >= start, Event.ts < end, Event.gpu_id.is_not(None),
                or_(Event.fatal.is_(True), Event.severity == "critical"), ~recovered,
                *_in_scope(Event.gpu_id, scope))
         .order_by(Event.ts.desc()))
    return _rows(engine, q)


# -- GPU state over a range ---------------------------------------------------------------------


def _cells(source: Source, scope: Scope, start: float, end: float, step: int,
           gpu_ids: Sequence[int] | None = None) -> Any:
    """Per (GPU, bucket) sample weights: all, ok, busy, idle-allocated, throttled, utilization."""
    t = source.table
    busy_at = _lit(IDLE_UTILIZATION)
    if source is RAW:
        ok = t.status == "ok"
        util = func.coalesce(t.utilization_gpu_ratio, 0.0)
        weights = [
            func.count().label("w"),
            func.sum(case((ok, 1), else_=0)).label("ok_w"),
            func.sum(case((and_(ok, util >= busy_at), 1), else_=0)).label("busy_w"),
            func.sum(case((and_(ok, util < busy_at, t.process_count > 0), 1), else_=0)).label("alloc_w"),
            func.sum(case((and_(ok, t.clock_event_reasons.op("&")(_lit(THROTTLE)) != 0), 1), else_=0)).label("thr_w"),
            func.sum(case((ok, t.utilization_gpu_ratio), else_=None)).label("util_sum"),
            func.sum(case((and_(ok, t.utilization_gpu_ratio.is_not(None)), 1), else_=0)).label("util_n"),
        ]
        lo = start
    else:  # a rollup bucket is classified by its average; its ratios are shares of its ok samples
        util = func.coalesce(t.utilization_avg, 0.0)
        weights = [
            func.sum(t.samples).label("w"),
            func.sum(t.ok_samples).label("ok_w"),
            func.sum(case((util >= busy_at, t.ok_samples), else_=0)).label("busy_w"),
            func.sum(case((util < busy_at, t.ok_samples * func.coalesce(t.idle_allocated_ratio, 0.0)),
                          else_=0)).label("alloc_w"),
            func.sum(t.ok_samples * func.coalesce(t.throttled_ratio, 0.0)).label("thr_w"),
            func.sum(t.utilization_avg * t.ok_samples).label("util_sum"),
            func.sum(case((t.utilization_avg.is_not(None), t.ok_samples), else_=0)).label("util_n"),
        ]
        lo = (start // source.resolution) * source.resolution
    bucket = _bucket(t.ts, step)
    where = [t.ts >= lo, t.ts < end, *_in_scope(t.gpu_id, scope)]
    if gpu_ids is not None:
        where.append(t.gpu_id.in_(list(gpu_ids)))
    return (select(t.gpu_id, func.max(t.node_id).label("node_id"), bucket.label("ts"), *weights)
            .where(*where).group_by(t.gpu_id, bucket).subquery())


def _fractions(c: Any) -> dict[str, ColumnElement[Any]]:
    w = cast(c.w, Float)
    return {
        "busy": cast(c.busy_w, Float) / w,
        "idle_allocated": cast(c.alloc_w, Float) / w,
        "idle": cast(c.ok_w - c.busy_w - c.alloc_w, Float) / w,
        "down": cast(c.w - c.ok_w, Float) / w,
        "throttled": cast(c.thr_w, Float) / w,
    }


def state_series(engine: Engine, scope: Scope, start: float, end: float) -> tuple[list[dict[str, Any]], Source, int]:
    """GPUs per state in each bucket (a GPU split across states by its share of samples).

    ``down`` here counts only GPUs that reported a non-ok status; GPUs that sent nothing in a
    bucket are missing from ``reporting`` and are added as down against the inventory by the caller.
    """
    source = source_for(end - start)
    step = bucket_for(end - start, source)
    c = _cells(source, scope, start, end, step)
    cols = [func.sum(expr).label(name) for name, expr in _fractions(c.c).items()]
    q = select(c.c.ts, *cols, func.count().label("reporting")).group_by(c.c.ts).order_by(c.c.ts)
    return _rows(engine, q), source, step


def gpu_state_hours(engine: Engine, scope: Scope, start: float, end: float) -> list[dict[str, Any]]:
    """Per GPU: hours reported and hours in each state over the range, and mean utilization."""
    source = source_for(end - start)
    step = bucket_for(end - start, source)
    c = _cells(source, scope, start, end, step)
    hi = case((c.c.ts + _lit(step) > end, end), else_=c.c.ts + _lit(step))
    lo = case((c.c.ts < start, start), else_=c.c.ts)
    hours = (hi - lo) / _lit(3600.0)
    cols = [func.sum(expr * hours).label(f"{name}_hours") for name, expr in _fractions(c.c).items()]
    q = (select(c.c.gpu_id, func.max(c.c.node_id).label("node_id"), func.sum(hours).label("reported_hours"),
                *cols, (func.sum(c.c.util_sum) / func.nullif(func.sum(c.c.util_n), 0)).label("utilization"))
         .group_by(c.c.gpu_id))
    return _rows(engine, q)


def utilization_matrix(engine: Engine, gpu_ids: Sequence[int], start: float, end: float) -> list[dict[str, Any]]:
    """Mean utilization per (GPU, bucket) for the given GPUs (the heatmap)."""
    if not gpu_ids:
        return []
    source = source_for(end - start)
    c = _cells(source, Scope(), start, end, bucket_for(end - start, source), gpu_ids)
    q = select(c.c.gpu_id, c.c.ts, (cast(c.c.util_sum, Float) / func.nullif(c.c.util_n, 0)).label("utilization"))
    return _rows(engine, q)


# -- events -------------------------------------------------------------------------------------


def _event_select() -> Any:
    return (select(Event.id, Event.ts, Event.kind, Event.code, Event.severity, Event.category, Event.fatal,
                   Event.message, Event.recommended_action, Event.gpu_id, Event.gpu_index, Event.details,
                   Node.name.label("node"), Node.id.label("node_id"), Gpu.model)
            .join(Node, Node.id == Event.node_id).outerjoin(Gpu, Gpu.id == Event.gpu_id))


def _event_scope(scope: Scope) -> list[ColumnElement[bool]]:
    """Events of GPUs in scope, and node-level events of nodes that have a GPU in scope."""
    ids = scoped_gpu_ids(scope)
    if ids is None:
        return []
    nodes = select(Gpu.node_id).where(Gpu.id.in_(ids))
    return [or_(Event.gpu_id.in_(ids), and_(Event.gpu_id.is_(None), Event.node_id.in_(nodes)))]


def events(engine: Engine, scope: Scope, start: float, end: float, *, limit: int = 5000,
           node_id: int | None = None) -> list[dict[str, Any]]:
    """The newest events in the range (at most ``limit``)."""
    q = _event_select().where(Event.ts >= start, Event.ts < end, *_event_scope(scope))
    if node_id is not None:
        q = q.where(Event.node_id == node_id)
    return _rows(engine, q.order_by(Event.ts.desc()).limit(limit))


def event_summary(engine: Engine, scope: Scope, start: float, end: float) -> list[dict[str, Any]]:
    """Event counts per node, UTC day, kind, code, category, severity, fatality and whether the
    event is about one GPU (``gpu_level`` 1) or the whole node (0)."""
    day = _bucket(Event.ts, 86400)
    gpu_level = case((Event.gpu_id.is_(None), _lit(0)), else_=_lit(1))
    keys = [Node.name, day, Event.kind, Event.code, Event.category, Event.severity, Event.fatal, gpu_level]
    q = (select(Node.name.label("node"), day.label("day"), Event.kind, Event.code, Event.category, Event.severity,
                Event.fatal, gpu_level.label("gpu_level"), func.count().label("count"))
         .join(Node, Node.id == Event.node_id)
         .where(Event.ts >= start, Event.ts < end, *_event_scope(scope)).group_by(*keys))
    return _rows(engine, q)


def outages(engine: Engine, scope: Scope, start: float, end: float) -> list[dict[str, Any]]:
    """Fatal GPU events in the range with the time the GPU was next seen ok (``None``: not yet)."""
    back = (select(func.min(GpuSample.ts)).where(GpuSample.gpu_id == Event.gpu_id, GpuSample.ts > Event.ts,
                                                GpuSample.ts <= end, GpuSample.status == "ok")
            .scalar_subquery())
    q = (select(Event.id, Event.ts, Event.kind, Event.code, Event.category, Event.gpu_id, Event.node_id,
                back.label("ok_again"))
         .where(Event.ts >= start, Event.ts < end, Event.fatal.is_(True), Event.gpu_id.is_not(None),
                *_in_scope(Event.gpu_id, scope))
         .order_by(Event.gpu_id, Event.ts))
    return _rows(engine, q)


# -- one node -----------------------------------------------------------------------------------


def gpu_series(engine: Engine, gpu_ids: Sequence[int], start: float, end: float) -> tuple[list[dict[str, Any]], Source]:
    """Every stored metric of these GPUs over the range, from the source the range calls for."""
    source = source_for(end - start)
    t = source.table.__table__
    lo = start if source is RAW else (start // source.resolution) * source.resolution
    q = select(t).where(t.c.gpu_id.in_(list(gpu_ids)), t.c.ts >= lo, t.c.ts < end).order_by(t.c.gpu_id, t.c.ts)
    return _rows(engine, q), source


# Network, disk and filesystem series over ranges whose buckets are this long or longer read a
# share of each bucket (a week of a node at 10 s is 120,000 interface rows).
SAMPLED_FROM_SECONDS = 1800
SAMPLED_SHARE = 0.1


def _per_node_series(engine: Engine, table: Any, key: Any, node_id: int, start: float, end: float,
                     aggregates: dict[str, Any]) -> list[dict[str, Any]]:
    step = bucket_for(end - start, RAW)
    bucket = _bucket(table.ts, step)
    q = (select(key, bucket.label("ts"), *(fn.label(name) for name, fn in aggregates.items()))
         .where(table.node_id == node_id, table.ts >= start, table.ts < end)
         .group_by(key, bucket).order_by(key, bucket))
    if step >= SAMPLED_FROM_SECONDS:
        # Host-side tables have no rollups: over long ranges each bucket is summarised from the
        # samples of its first tenth, filtered on the primary-key index before any row is read.
        q = q.where(table.ts - bucket < _lit(step * SAMPLED_SHARE))
    return _rows(engine, q)


def interface_series(engine: Engine, node_id: int, start: float, end: float) -> list[dict[str, Any]]:
    t = InterfaceSample
    return _per_node_series(engine, t, t.interface, node_id, start, end, {
        "kind": func.max(t.kind), "rx_bytes_per_second": func.avg(t.rx_bytes_per_second),
        "tx_bytes_per_second": func.avg(t.tx_bytes_per_second),
        "speed_bits_per_second": func.max(t.speed_bits_per_second),
        "errors_total": func.max(func.coalesce(t.rx_errors_total, 0) + func.coalesce(t.tx_errors_total, 0)),
    })


def disk_series(engine: Engine, node_id: int, start: float, end: float) -> list[dict[str, Any]]:
    t = DiskSample
    return _per_node_series(engine, t, t.device, node_id, start, end, {
        "utilization_ratio": func.avg(t.utilization_ratio), "read_bytes_per_second": func.avg(t.read_bytes_per_second),
        "write_bytes_per_second": func.avg(t.write_bytes_per_second),
    })


def filesystem_series(engine: Engine, node_id: int, start: float, end: float) -> list[dict[str, Any]]:
    t = FilesystemSample
    return _per_node_series(engine, t, t.path, node_id, start, end, {
        "used_bytes": func.max(t.used_bytes), "size_bytes": func.max(t.size_bytes),
        "avail_bytes": func.min(t.avail_bytes),
    })


def latest_processes(engine: Engine, gpu_ids: Sequence[int], now: float) -> list[dict[str, Any]]:
    """The processes in each GPU's newest process sample (within ``CURRENT_LOOKBACK_SECONDS``)."""
    if not gpu_ids:
        return []
    p = GpuProcessSample
    latest = (select(p.gpu_id, func.max(p.ts).label("ts"))
              .where(p.gpu_id.in_(list(gpu_ids)), p.ts > now - CURRENT_LOOKBACK_SECONDS, p.ts <= now)
              .group_by(p.gpu_id).subquery())
    q = (select(p.gpu_id, p.ts, p.pid, p.name, p.used_memory_bytes, p.mig_instance)
         .join(latest, and_(p.gpu_id == latest.c.gpu_id, p.ts == latest.c.ts)).order_by(p.gpu_id, p.pid))
    return _rows(engine, q)


# -- benchmarks ---------------------------------------------------------------------------------


def bench_results(engine: Engine, scope: Scope, start: float, end: float, *, node_id: int | None = None,
                  gpu_id: int | None = None) -> list[dict[str, Any]]:
    """Benchmark results of runs started in the range, with their run, node and GPU."""
    gpu = func.coalesce(BenchResult.gpu_id, BenchRun.gpu_id)
    q = (select(BenchResult.id, BenchResult.metric, BenchResult.unit, BenchResult.value, BenchResult.median,
                BenchResult.p90, BenchResult.p99, BenchResult.cv, BenchResult.count, gpu.label("gpu_id"),
                BenchRun.id.label("run_id"), BenchRun.workload, BenchRun.suite, BenchRun.device, BenchRun.status,
                BenchRun.started_at, BenchRun.finished_at, BenchRun.config, BenchRun.environment,
                Node.id.label("node_id"), Node.name.label("node"), Gpu.index.label("gpu_index"),
                Gpu.model.label("gpu_model"))
         .join(BenchRun, BenchRun.id == BenchResult.run_id).join(Node, Node.id == BenchRun.node_id)
         .outerjoin(Gpu, Gpu.id == gpu)
         .where(BenchRun.started_at >= start, BenchRun.started_at < end)
         .order_by(BenchRun.started_at))
    ids = scoped_gpu_ids(scope)
    if ids is not None:
        nodes = select(Gpu.node_id).where(Gpu.id.in_(ids))
        q = q.where(or_(gpu.in_(ids), and_(gpu.is_(None), BenchRun.node_id.in_(nodes))))
    if node_id is not None:
        q = q.where(BenchRun.node_id == node_id)
    if gpu_id is not None:
        q = q.where(gpu == gpu_id)
    return _rows(engine, q)


def run_conditions(engine: Engine, spans: Sequence[tuple[int, float, float]]) -> list[dict[str, Any]]:
    """What each GPU went through during [start, end] (a benchmark run): share of ok samples that
    were throttled (any power or thermal reason), thermal, power-capped; max temperature, mean power."""
    t = GpuSample
    ok = t.status == "ok"
    reasons = t.clock_event_reasons

    def share(mask: int) -> ColumnElement[Any]:
        hit = func.sum(case((and_(ok, reasons.op("&")(_lit(mask)) != 0), 1), else_=0))
        return cast(hit, Float) / func.nullif(func.sum(case((ok, 1), else_=0)), 0)

    out = []
    with engine.connect() as conn:
        for gpu_id, start, end in spans:
            q = (select(func.count().label("samples"), share(THROTTLE).label("throttled_ratio"),
                        share(0x20 | 0x40).label("thermal_ratio"), share(0x4 | 0x80).label("power_capped_ratio"),
                        func.max(t.temperature_gpu_celsius).label("temperature_max_celsius"),
                        func.avg(t.power_watts).label("power_avg_watts"),
                        func.avg(t.sm_clock_hz).label("sm_clock_avg_hz"))
                 .where(t.gpu_id == gpu_id, t.ts >= start, t.ts <= end))
            row = dict(conn.execute(q).one()._mapping)
            out.append({"gpu_id": gpu_id, "start": start, "end": end, **row})
    return out
