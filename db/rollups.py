"""1-minute and 1-hour GPU rollups, maintained incrementally with one INSERT … SELECT per step.

Pages over long ranges read these instead of raw samples, so a week costs the same whatever the
sample interval. ``refresh`` recomputes only buckets at or after the stored watermark (minus a
grace period for late batches from a spool replay) and replaces them, so it is idempotent and can be
called as often as wanted, by the controller, the demo or ``gpufleet db rollup``.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite

from db.models import GpuRollup1h, GpuRollup1m, RollupState

THROTTLE = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THERMAL = 0x20 | 0x40
POWER = 0x4 | 0x80
IDLE_UTILIZATION = 0.05
# Batches replayed from an agent's spool arrive late; buckets this recent are recomputed each time.
LATE_SECONDS = 3600.0

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


STEPS = (
    ("gpu_rollups_1m", "gpu_samples", 60, True, GpuRollup1m),
    ("gpu_rollups_1h", "gpu_rollups_1m", 3600, False, GpuRollup1h),
)


def refresh(engine: Engine, *, now: float | None = None) -> dict[str, int]:
    """Bring both rollups up to date; returns the buckets written per table."""
    now = time.time() if now is None else now
    written: dict[str, int] = {}
    with engine.begin() as conn:
        for target, source, seconds, raw, model in STEPS:
            written[target] = _refresh_one(conn, target, source, seconds, raw, model, now)
    return written


def _refresh_one(conn: Connection, target: str, source: str, seconds: int, raw: bool,
                 model: type[GpuRollup1m] | type[GpuRollup1h],
                 now: float) -> int:
    state = conn.execute(select(RollupState.done_until).where(RollupState.name == target)).scalar()
    if state is None:
        first = conn.execute(text(f"SELECT MIN(ts) FROM {source}")).scalar()
        if first is None:
            return 0
        lo = (first // seconds) * seconds
    else:
        lo = ((state - LATE_SECONDS) // seconds) * seconds
    hi = (now // seconds + 1) * seconds  # includes the current, partial bucket; recomputed next time
    conn.execute(delete(model).where(model.ts >= lo, model.ts < hi))
    n = conn.execute(text(_bucket_sql(source, target, seconds, raw)), {"lo": lo, "hi": hi}).rowcount
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(RollupState).values(name=target, done_until=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"done_until": now}))
    return int(n or 0)
