"""1-minute and 1-hour rollups per GPU and per node, maintained incrementally with one
INSERT … SELECT per step, the same SQL on SQLite and PostgreSQL.

Pages over long ranges read these instead of raw samples, so a week costs the same whatever the
sample interval. ``refresh`` recomputes only buckets at or after the stored watermark (minus a
grace period for late batches from a spool replay) and replaces them, so it is idempotent and can be
called as often as wanted, by the controller, the demo or ``gpufleet db rollup``. The steps run in
order: GPU minutes from raw samples, GPU hours from GPU minutes, node minutes from GPU minutes and
host samples, node hours from GPU hours and node minutes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, select, text

from db.engine import upsert
from db.models import GpuRollup1h, GpuRollup1m, NodeRollup1h, NodeRollup1m, RollupState

THROTTLE = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THERMAL = 0x20 | 0x40
POWER = 0x4 | 0x80
IDLE_UTILIZATION = 0.05
# Batches replayed from an agent's spool arrive late: buckets this far before the watermark are
# recomputed every LATE_EVERY seconds; in between, a refresh recomputes only the last RECENT_SECONDS,
# so its cost does not grow with an hour of raw samples at every call.
LATE_SECONDS = 3600.0
LATE_EVERY = 600.0
RECENT_SECONDS = 120.0

_AGGREGATES = {
    "utilization_avg": ("avg", "utilization_gpu_ratio"),
    "utilization_max": ("max", "utilization_gpu_ratio"),
    "utilization_min": ("min", "utilization_gpu_ratio"),
    "memory_used_avg_bytes": ("avg", "memory_used_bytes"),
    "memory_used_max_bytes": ("max", "memory_used_bytes"),
    "temperature_avg_celsius": ("avg", "temperature_gpu_celsius"),
    "temperature_max_celsius": ("max", "temperature_gpu_celsius"),
    "memory_temperature_max_celsius": ("max", "temperature_memory_celsius"),
    "power_avg_watts": ("avg", "power_watts"),
    "power_max_watts": ("max", "power_watts"),
    "power_limit_watts": ("max", "power_limit_watts"),
    "sm_clock_avg_hz": ("avg", "sm_clock_hz"),
    "ecc_corrected_max": ("max", "ecc_corrected_volatile_total"),
    "ecc_uncorrected_max": ("max", "ecc_uncorrected_volatile_total"),
    "pcie_replay_max": ("max", "pcie_replay_total"),
    "nvlink_errors_max": ("max", "nvlink_errors_total"),
}


def _ratio(condition: str) -> str:
    return (f"CAST(SUM(CASE WHEN status = 'ok' AND ({condition}) THEN 1 ELSE 0 END) AS FLOAT)"
            " / NULLIF(SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), 0)")


def _bucket_sql(source: str, target: str, seconds: int, raw: bool) -> str:
    """INSERT … SELECT that fills ``target`` buckets in [:lo, :hi) from ``source``."""
    bucket = f"(FLOOR(ts / {seconds}) * {seconds})"
    cols = ["gpu_id", "ts", "node_id", "samples", "ok_samples", *_AGGREGATES,
            "throttled_ratio", "thermal_ratio", "power_capped_ratio", "idle_allocated_ratio"]
    if raw:
        exprs = [
            "gpu_id", bucket, "MAX(node_id)", "COUNT(*)", "SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END)",
            *(f"{fn.upper()}({col})" for fn, col in _AGGREGATES.values()),
            _ratio(f"(clock_event_reasons & {THROTTLE}) <> 0"),
            _ratio(f"(clock_event_reasons & {THERMAL}) <> 0"),
            _ratio(f"(clock_event_reasons & {POWER}) <> 0"),
            _ratio(f"process_count > 0 AND utilization_gpu_ratio < {IDLE_UTILIZATION}"),
        ]
    else:  # roll 1-minute buckets up into hours, weighting averages by samples
        def wavg(c: str) -> str:
            return f"SUM({c} * ok_samples) / NULLIF(SUM(CASE WHEN {c} IS NOT NULL THEN ok_samples ELSE 0 END), 0)"

        exprs = ["gpu_id", bucket, "MAX(node_id)", "SUM(samples)", "SUM(ok_samples)"]
        for name, (fn, _col) in _AGGREGATES.items():
            exprs.append(wavg(name) if fn == "avg" else f"{fn.upper()}({name})")
        exprs += [wavg(c) for c in ("throttled_ratio", "thermal_ratio", "power_capped_ratio",
                                    "idle_allocated_ratio")]
    return (f"INSERT INTO {target} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {source} "
            f"WHERE ts >= :lo AND ts < :hi GROUP BY gpu_id, {bucket}")


def _wavg(expr: str, weight: str) -> str:
    """Mean of per-bucket means, weighted by the samples behind each."""
    return f"SUM({expr} * {weight}) / NULLIF(SUM(CASE WHEN {expr} IS NOT NULL THEN {weight} ELSE 0 END), 0)"


_NODE_COLS = ("node_id", "ts", "gpu_samples", "gpus_reporting", "utilization_avg", "utilization_max",
              "utilization_min", "power_sum_watts", "memory_used_sum_bytes", "temperature_max_celsius",
              "throttled_ratio", "host_samples", "cpu_utilization_avg", "cpu_utilization_max",
              "host_memory_used_avg_bytes")


def _node_sql(gpu_source: str, host_source: str, target: str, seconds: int, raw_host: bool) -> str:
    """INSERT … SELECT of node buckets in [:lo, :hi): the GPU part from the GPU rollup of the same
    size, the host part from raw host samples (minutes) or node minutes (hours). A node with host
    samples and no GPU still gets its row."""
    bucket = f"(FLOOR(ts / {seconds}) * {seconds})"
    gpu = (f"SELECT node_id, ts, SUM(samples) AS gpu_samples, "
           "SUM(CASE WHEN ok_samples > 0 THEN 1 ELSE 0 END) AS gpus_reporting, "
           f"{_wavg('utilization_avg', 'ok_samples')} AS utilization_avg, MAX(utilization_max) AS utilization_max, "
           "MIN(utilization_min) AS utilization_min, SUM(power_avg_watts) AS power_sum_watts, "
           "SUM(memory_used_avg_bytes) AS memory_used_sum_bytes, "
           "MAX(temperature_max_celsius) AS temperature_max_celsius, "
           f"{_wavg('throttled_ratio', 'ok_samples')} AS throttled_ratio "
           f"FROM {gpu_source} WHERE ts >= :lo AND ts < :hi GROUP BY node_id, ts")
    if raw_host:
        host = (f"SELECT node_id, {bucket} AS ts, COUNT(*) AS host_samples, "
                "AVG(cpu_utilization_ratio) AS cpu_avg, MAX(cpu_utilization_ratio) AS cpu_max, "
                "AVG(memory_used_bytes) AS mem_avg "
                f"FROM {host_source} WHERE ts >= :lo AND ts < :hi GROUP BY node_id, {bucket}")
    else:
        host = (f"SELECT node_id, {bucket} AS ts, SUM(host_samples) AS host_samples, "
                f"{_wavg('cpu_utilization_avg', 'host_samples')} AS cpu_avg, "
                "MAX(cpu_utilization_max) AS cpu_max, "
                f"{_wavg('host_memory_used_avg_bytes', 'host_samples')} AS mem_avg "
                f"FROM {host_source} WHERE ts >= :lo AND ts < :hi AND host_samples > 0 GROUP BY node_id, {bucket}")
    return (f"INSERT INTO {target} ({', '.join(_NODE_COLS)}) "  # INSERT first: sqlite3 counts its rows
            f"WITH g AS ({gpu}), h AS ({host}) "
            "SELECT k.node_id, k.ts, COALESCE(g.gpu_samples, 0), COALESCE(g.gpus_reporting, 0), g.utilization_avg, "
            "g.utilization_max, g.utilization_min, g.power_sum_watts, g.memory_used_sum_bytes, "
            "g.temperature_max_celsius, g.throttled_ratio, COALESCE(h.host_samples, 0), h.cpu_avg, h.cpu_max, "
            "h.mem_avg "
            "FROM (SELECT node_id, ts FROM g UNION SELECT node_id, ts FROM h) AS k "
            "LEFT JOIN g ON g.node_id = k.node_id AND g.ts = k.ts "
            "LEFT JOIN h ON h.node_id = k.node_id AND h.ts = k.ts")


@dataclass(frozen=True)
class Step:
    target: str
    sources: tuple[str, ...]  # read for the first bucket when the step has never run
    seconds: int
    model: type[GpuRollup1m] | type[GpuRollup1h] | type[NodeRollup1m] | type[NodeRollup1h]
    sql: str


STEPS = (
    Step("gpu_rollups_1m", ("gpu_samples",), 60, GpuRollup1m,
         _bucket_sql("gpu_samples", "gpu_rollups_1m", 60, True)),
    Step("gpu_rollups_1h", ("gpu_rollups_1m",), 3600, GpuRollup1h,
         _bucket_sql("gpu_rollups_1m", "gpu_rollups_1h", 3600, False)),
    Step("node_rollups_1m", ("gpu_rollups_1m", "host_samples"), 60, NodeRollup1m,
         _node_sql("gpu_rollups_1m", "host_samples", "node_rollups_1m", 60, True)),
    Step("node_rollups_1h", ("gpu_rollups_1h", "node_rollups_1m"), 3600, NodeRollup1h,
         _node_sql("gpu_rollups_1h", "node_rollups_1m", "node_rollups_1h", 3600, False)),
)
# Raw tables a rollup is built from, with the rollup that must cover them before they are pruned.
ROLLED_UP_FROM = {"gpu_samples": "gpu_rollups_1m", "host_samples": "node_rollups_1m"}


def refresh(engine: Engine, *, now: float | None = None, since: float | None = None) -> dict[str, int]:
    """Bring every rollup up to date; returns the buckets written per table.

    Each call recomputes the last ``RECENT_SECONDS`` before the watermark, and the whole grace
    period (``LATE_SECONDS``) when it was last recomputed ``LATE_EVERY`` seconds ago or more.
    ``since`` also recomputes everything from that time on (history imported after the rollups had
    moved past it)."""
    now = time.time() if now is None else now
    written: dict[str, int] = {}
    with engine.begin() as conn:
        for step in STEPS:
            written[step.target] = _refresh_one(conn, step, now, since)
    return written


def watermark(conn: Connection, target: str) -> float | None:
    """Up to when ``target`` has been computed (None: never)."""
    return conn.execute(select(RollupState.done_until).where(RollupState.name == target)).scalar()


def _refresh_one(conn: Connection, step: Step, now: float, since: float | None) -> int:
    seconds = step.seconds
    state = watermark(conn, step.target)
    late_mark = f"{step.target}:late"
    if state is None:
        firsts = [conn.execute(text(f"SELECT MIN(ts) FROM {source}")).scalar() for source in step.sources]
        present = [f for f in firsts if f is not None]
        if not present:
            return 0
        lo = (min(present) // seconds) * seconds
        _mark(conn, late_mark, now)
    elif now - (watermark(conn, late_mark) or -LATE_EVERY) >= LATE_EVERY:
        lo = ((state - LATE_SECONDS) // seconds) * seconds
        _mark(conn, late_mark, now)
    else:
        lo = ((state - RECENT_SECONDS) // seconds) * seconds
    if since is not None:
        lo = min(lo, (since // seconds) * seconds)
    hi = (now // seconds + 1) * seconds  # includes the current, partial bucket; recomputed next time
    model = step.model
    conn.execute(delete(model).where(model.ts >= lo, model.ts < hi))
    n = conn.execute(text(step.sql), {"lo": lo, "hi": hi}).rowcount
    _mark(conn, step.target, now)
    return int(n or 0)


def _mark(conn: Connection, name: str, now: float) -> None:
    stmt = upsert(conn, RollupState).values(name=name, done_until=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"done_until": now}))
