"""Rollups equal what a direct aggregate over raw samples gives, and refresh is incremental."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from collectors.records import GpuInfo, Sample
from db.engine import make_engine, upgrade
from db.models import GpuRollup1h, GpuRollup1m
from db.rollups import refresh
from db.writer import Batch, Writer

T0 = 1_764_000_000.0 - (1_764_000_000.0 % 3600)


def batch(ts: float, util: float, reasons: int = 0, procs: int = 1) -> Batch:
    recs = [GpuInfo(index=0, uuid="GPU-r")]
    recs.append(Sample("gpu", ts, {"gpu_index": 0, "gpu_uuid": "GPU-r"}, {
        "status": "ok", "utilization_gpu_ratio": util, "power_watts": 100 + 500 * util,
        "temperature_gpu_celsius": 40 + 40 * util, "clock_event_reasons": reasons, "process_count": procs}))
    return Batch(uuid.uuid4().hex, {"name": "r"}, ts, recs)


def test_rollups_match_raw_aggregates(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    w = Writer(engine)
    # Two hours at 10 s: the first half-hour idle but allocated, then busy with thermal throttling.
    for i in range(720):
        ts = T0 + 10 * i
        busy = i >= 180
        w.write(batch(ts, 0.9 if busy else 0.01, reasons=0x40 if busy and i % 2 else 0))
    out = refresh(engine, now=T0 + 7200)
    assert out["gpu_rollups_1m"] == 120 and out["gpu_rollups_1h"] == 2
    with engine.connect() as conn:
        raw_avg = conn.execute(text("select avg(utilization_gpu_ratio) from gpu_samples")).scalar()
        hours = conn.execute(select(GpuRollup1h).order_by(GpuRollup1h.ts)).all()
        minutes = conn.execute(select(GpuRollup1m.utilization_avg)).scalars().all()
    assert len(minutes) == 120
    assert sum(h.utilization_avg for h in hours) / 2 == pytest.approx(raw_avg)
    assert hours[0].samples == 360 and hours[0].utilization_max == pytest.approx(0.9)
    assert hours[0].idle_allocated_ratio == pytest.approx(0.5)
    assert hours[1].thermal_ratio == pytest.approx(0.5) and hours[1].idle_allocated_ratio == 0
    # A late batch inside the grace period is picked up by the next refresh; nothing is doubled.
    w.write(batch(T0 + 7195, 0.0))
    refresh(engine, now=T0 + 7300)
    with engine.connect() as conn:
        n = conn.execute(text("select count(*) from gpu_rollups_1m")).scalar()
        last = conn.execute(select(GpuRollup1m).where(GpuRollup1m.ts == T0 + 7140)).one()
    assert n == 120 and last.samples == 7
    engine.dispose()


def test_refresh_on_empty_store(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    assert refresh(engine) == {"gpu_rollups_1m": 0, "gpu_rollups_1h": 0}
