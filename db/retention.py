"""Retention per table: raw samples are kept for days, rollups for a year (defaults; each table's age
can be set on its own, by ``gpufleet db prune --keep TABLE=DAYS`` or the controller's settings).

Raw tables that rollups are built from are never pruned past what the rollups already cover, so a
long-range page shows the same numbers before and after its raw samples are gone.

On PostgreSQL the sample tables carry BRIN indexes on ``ts``. A BRIN summary only ever widens: once
the space of deleted old rows is reused by new ones, the range it covers would claim both last
year and today and match every query. So the block ranges a prune emptied are desummarized (through
``gpufleet_brin_desummarize``, a function the migration owns, so a least-privileged controller can
call it); VACUUM summarizes them again from what they hold then.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, Engine, Table, delete, text

from db.models import HEARTBEATS, SAMPLE_TABLES, Base
from db.rollups import LATE_SECONDS, ROLLED_UP_FROM, STEPS, watermark

DAY = 86400.0
RAW_DAYS = 14.0
ROLLUP_DAYS = 365.0
SAMPLE_NAMES = tuple(t.name for t in SAMPLE_TABLES.values())  # BRIN-indexed on PostgreSQL
RAW_TABLES = (*SAMPLE_NAMES, HEARTBEATS.name, "ingested_batches")
ROLLUP_TABLES = tuple(step.target for step in STEPS)
# Kept for ever unless a retention is given for them.
OPTIONAL_TABLES = ("events",)
BRIN_PAGES_PER_RANGE = 128  # PostgreSQL's default, which the migration keeps


def plan(*, raw_days: float = RAW_DAYS, rollup_days: float = ROLLUP_DAYS,
         days: Mapping[str, float] | None = None) -> dict[str, float]:
    """Days to keep per table: ``raw_days`` and ``rollup_days`` for their groups, ``days`` per table
    on top. Raises ValueError for a table that has no retention or an age that is not positive."""
    keep = {name: raw_days for name in RAW_TABLES} | {name: rollup_days for name in ROLLUP_TABLES}
    for name, value in (days or {}).items():
        if name not in keep and name not in OPTIONAL_TABLES:
            known = ", ".join([*keep, *OPTIONAL_TABLES])
            raise ValueError(f"no retention for table {name!r} (tables: {known})")
        keep[name] = value
    for name, value in keep.items():
        if not value > 0:
            raise ValueError(f"retention of {name} must be a positive number of days, not {value}")
    return keep


def prune(engine: Engine, now: float, *, raw_days: float = RAW_DAYS, rollup_days: float = ROLLUP_DAYS,
          days: Mapping[str, float] | None = None) -> dict[str, int]:
    """Delete rows older than their table's retention; returns rows deleted per table."""
    keep = plan(raw_days=raw_days, rollup_days=rollup_days, days=days)
    deleted: dict[str, int] = {}
    emptied: dict[str, list[int]] = {}
    with engine.begin() as conn:
        for name, age in keep.items():
            cutoff = now - age * DAY
            if name in ROLLED_UP_FROM:  # never past what the rollups cover (nothing if never rolled up)
                done = watermark(conn, ROLLED_UP_FROM[name])
                if done is None:
                    deleted[name] = 0
                    continue
                cutoff = min(cutoff, done - LATE_SECONDS)
            deleted[name], ranges = _delete(conn, Base.metadata.tables[name], cutoff)
            if ranges:
                emptied[name] = ranges
        for name, ranges in emptied.items():
            conn.execute(text("SELECT gpufleet_brin_desummarize(CAST(:ix AS regclass), :blocks)"),
                         {"ix": f"ix_{name}_ts", "blocks": ranges})
    return deleted


def _delete(conn: Connection, table: Table, cutoff: float) -> tuple[int, list[int]]:
    """Delete rows with ``ts < cutoff``; on PostgreSQL sample tables also say which BRIN block
    ranges (their first block) lost rows."""
    if conn.dialect.name != "postgresql" or table.name not in SAMPLE_NAMES:
        return int(conn.execute(delete(table).where(table.c.ts < cutoff)).rowcount or 0), []
    ppr = BRIN_PAGES_PER_RANGE
    rows = conn.execute(text(
        f'WITH d AS (DELETE FROM "{table.name}" WHERE ts < :cutoff RETURNING ctid) '
        f"SELECT CAST((CAST(CAST(ctid AS text) AS point))[0] AS bigint) / {ppr} * {ppr} AS first_block, "
        "COUNT(*) FROM d GROUP BY 1 ORDER BY 1"), {"cutoff": cutoff}).all()
    return sum(int(n) for _, n in rows), [int(block) for block, _ in rows]
