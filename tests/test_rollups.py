"""Rollups (per GPU and per node) equal what a direct aggregate over raw samples gives, and refresh
is incremental; on SQLite and the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections import defaultdict
from statistics import fmean

import pytest
from sqlalchemy import select, text

from collectors.records import GpuInfo, Sample
from db.engine import make_engine, upgrade
from db.models import GpuRollup1h, GpuRollup1m, NodeRollup1h, NodeRollup1m
from db.rollups import LATE_EVERY, STEPS, refresh
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
    w.write_many([batch(T0 + 10 * i, 0.9 if i >= 180 else 0.01, reasons=0x40 if i >= 180 and i % 2 else 0)
                  for i in range(720)])
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
    # An older late batch (a spool replay after an hour-long outage) waits for the next recompute of
    # the whole grace period, at most LATE_EVERY later; the refreshes in between stay cheap.
    w.write(batch(T0 + 4505, 0.0))
    refresh(engine, now=T0 + 7400)
    assert minute_samples(engine, T0 + 4500) == 6
    refresh(engine, now=T0 + 7200 + LATE_EVERY)
    assert minute_samples(engine, T0 + 4500) == 7
    engine.dispose()


def minute_samples(engine, ts: float) -> int:
    with engine.connect() as conn:
        return conn.execute(select(GpuRollup1m.samples).where(GpuRollup1m.ts == ts)).scalar_one()


# -- per node ---------------------------------------------------------------------------------------

NODES = {"a": 3, "b": 2, "c": 0}  # node c has no GPU: host samples only
STEP = 20.0
STEPS_PER_RUN = 2 * 3600 // int(STEP)


def gpu_values(node: str, gpu: int, i: int) -> dict:
    """Deterministic but uneven values; GPU a/2 is lost for the second half of the first hour."""
    if node == "a" and gpu == 2 and 90 <= i < 180:
        return {"status": "lost"}
    phase = (i * 7 + gpu * 13 + len(node)) % 17
    return {"status": "ok", "utilization_gpu_ratio": phase / 16, "power_watts": 80.0 + 37.5 * phase + gpu,
            "memory_used_bytes": (phase + 1) * 2**30, "temperature_gpu_celsius": 30.0 + phase,
            "clock_event_reasons": 0x40 if phase > 12 else 0}


def host_values(node: str, i: int) -> dict:
    return {"cpu_utilization_ratio": ((i * 3 + len(node)) % 11) / 10, "memory_used_bytes": (i % 5 + 1) * 2**33}


def node_batches() -> list[Batch]:
    out = []
    for i in range(STEPS_PER_RUN):
        ts = T0 + STEP * i
        for node, gpus in NODES.items():
            recs: list = [GpuInfo(index=g, uuid=f"GPU-{node}-{g}") for g in range(gpus)]
            recs += [Sample("gpu", ts, {"gpu_index": g, "gpu_uuid": f"GPU-{node}-{g}"}, gpu_values(node, g, i))
                     for g in range(gpus)]
            recs.append(Sample("host", ts, {}, host_values(node, i)))
            out.append(Batch(uuid.uuid4().hex, {"name": node}, ts, recs))
    return out


def expected(seconds: int) -> dict[tuple[str, float], dict]:
    """Node buckets computed in Python straight from the raw values written."""
    gpu_rows: dict[tuple[str, float], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    host_rows: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for i in range(STEPS_PER_RUN):
        ts = T0 + STEP * i
        bucket = ts // seconds * seconds
        for node, gpus in NODES.items():
            for g in range(gpus):
                gpu_rows[(node, bucket)][g].append(gpu_values(node, g, i))
            host_rows[(node, bucket)].append(host_values(node, i))
    out = {}
    for key, hosts in host_rows.items():
        per_gpu = {g: [r for r in rows if r["status"] == "ok"] for g, rows in gpu_rows.get(key, {}).items()}
        oks = [r for rows in per_gpu.values() for r in rows]
        live = [rows for rows in per_gpu.values() if rows]
        out[key] = {
            "gpu_samples": sum(len(rows) for rows in gpu_rows.get(key, {}).values()),
            "gpus_reporting": len(live),
            "utilization_avg": fmean(r["utilization_gpu_ratio"] for r in oks) if oks else None,
            "utilization_max": max((r["utilization_gpu_ratio"] for r in oks), default=None),
            "utilization_min": min((r["utilization_gpu_ratio"] for r in oks), default=None),
            "power_sum_watts": sum(fmean(r["power_watts"] for r in rows) for rows in live) if live else None,
            "memory_used_sum_bytes": sum(fmean(r["memory_used_bytes"] for r in rows) for rows in live) if live
            else None,
            "temperature_max_celsius": max((r["temperature_gpu_celsius"] for r in oks), default=None),
            "throttled_ratio": fmean(1.0 if r["clock_event_reasons"] else 0.0 for r in oks) if oks else None,
            "host_samples": len(hosts),
            "cpu_utilization_avg": fmean(h["cpu_utilization_ratio"] for h in hosts),
            "cpu_utilization_max": max(h["cpu_utilization_ratio"] for h in hosts),
            "host_memory_used_avg_bytes": fmean(h["memory_used_bytes"] for h in hosts),
        }
    return out


def stored(engine, model) -> dict[tuple[str, float], dict]:
    names = {"a": None, "b": None, "c": None}
    with engine.connect() as conn:
        ids = dict(conn.execute(text("select id, name from nodes")).all())
        rows = conn.execute(select(model.__table__)).mappings().all()
    assert set(ids.values()) == set(names)
    return {(ids[r["node_id"]], r["ts"]): {k: v for k, v in r.items() if k not in ("node_id", "ts")} for r in rows}


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, row in want.items():
        for col, value in row.items():
            assert got[key][col] == (None if value is None else pytest.approx(value, rel=1e-9)), (key, col)


def test_node_rollups_match_raw_aggregates(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    w = Writer(engine)
    batches = node_batches()
    for n in range(0, len(batches), 120):
        w.write_many(batches[n:n + 120])
    out = refresh(engine, now=T0 + 7200)
    assert out["node_rollups_1m"] == 3 * 120 and out["node_rollups_1h"] == 3 * 2
    assert_same(stored(engine, NodeRollup1m), expected(60))
    assert_same(stored(engine, NodeRollup1h), expected(3600))
    # Refreshing again changes nothing; a later refresh only extends.
    refresh(engine, now=T0 + 7300)
    assert_same(stored(engine, NodeRollup1h), expected(3600))
    engine.dispose()


def test_since_recomputes_history_imported_after_the_watermark(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    w = Writer(engine)
    w.write(batch(T0 + 5 * 3600, 0.5))
    refresh(engine, now=T0 + 5 * 3600 + 60)
    w.write(batch(T0, 0.5))  # five hours older than the watermark: outside the grace period
    refresh(engine, now=T0 + 5 * 3600 + 120)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from gpu_rollups_1h")).scalar() == 1
    refresh(engine, now=T0 + 5 * 3600 + 180, since=T0)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from gpu_rollups_1h")).scalar() == 2
        assert conn.execute(text("select count(*) from node_rollups_1h")).scalar() == 2
    engine.dispose()


def test_refresh_on_empty_store(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    assert refresh(engine) == {step.target: 0 for step in STEPS}
