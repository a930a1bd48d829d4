"""Retention: raw samples are kept for days, rollups for a year (defaults; both configurable)."""

from __future__ import annotations

from sqlalchemy import Engine, delete

from db.models import HEARTBEATS, SAMPLE_TABLES, Base

DAY = 86400.0
RAW_DAYS = 14.0
ROLLUP_DAYS = 365.0


def prune(engine: Engine, now: float, *, raw_days: float = RAW_DAYS,
          rollup_days: float = ROLLUP_DAYS) -> dict[str, int]:
    """Delete rows older than their table's retention; returns rows deleted per table."""
    plan = [(t, raw_days) for t in [*SAMPLE_TABLES.values(), HEARTBEATS]]
    plan += [(Base.metadata.tables[name], rollup_days) for name in ("gpu_rollups_1m", "gpu_rollups_1h")]
    deleted: dict[str, int] = {}
    with engine.begin() as conn:
        for table, days in plan:
            deleted[table.name] = conn.execute(delete(table).where(table.c.ts < now - days * DAY)).rowcount
    return deleted
