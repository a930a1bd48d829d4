"""Retention removes exactly what is past its table's age, never raw rows the rollups do not cover yet,
and long-range pages read the same numbers before and after raw samples are pruned."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from collectors.records import Event, GpuInfo, Sample
from db import readmodels
from db.engine import make_engine, upgrade
from db.retention import DAY, plan, prune
from db.rollups import refresh
from db.writer import Batch, Writer
from gpufleet.cli import main

T0 = 1_764_000_000.0 - (1_764_000_000.0 % 86400)


def batch(ts: float, *, gpus: int = 2, util: float = 0.5, event: bool = False) -> Batch:
    recs: list = []
    for g in range(gpus):
        recs.append(GpuInfo(index=g, uuid=f"GPU-t-{g}"))
        recs.append(Sample("gpu", ts, {"gpu_index": g, "gpu_uuid": f"GPU-t-{g}"}, {
            "status": "ok", "utilization_gpu_ratio": util if g else 1 - util, "power_watts": 300.0 + 100 * util,
            "process_count": 1, "clock_event_reasons": 0x4 if util > 0.8 else 0}))
    recs.append(Sample("host", ts, {}, {"cpu_utilization_ratio": util}))
    if event:
        recs.append(Event(ts, "xid", "critical", "XID 79", code="79", gpu_index=0, gpu_uuid="GPU-t-0"))
    return Batch(uuid.uuid4().hex, {"name": "t"}, ts, recs)


def minimum(engine, table: str) -> tuple[int, float | None]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*), min(ts) FROM {table}")).one())  # type: ignore[return-value]


def test_prune_removes_only_rows_past_their_age(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    # Twenty days, one batch an hour, an event a day.
    Writer(engine).write_many([batch(T0 + 3600 * h, event=h % 24 == 0) for h in range(20 * 24)])
    now = T0 + 20 * DAY
    refresh(engine, now=now)
    deleted = prune(engine, now, days={"host_samples": 2, "gpu_rollups_1m": 10})
    # Raw: 14 days kept (hours 144..479), the 6 days before deleted, per table as configured.
    assert deleted["gpu_samples"] == 2 * 6 * 24 and minimum(engine, "gpu_samples") == (2 * 14 * 24, now - 14 * DAY)
    assert deleted["heartbeats"] == 6 * 24 and deleted["ingested_batches"] == 6 * 24
    assert minimum(engine, "host_samples") == (2 * 24, now - 2 * DAY)
    assert minimum(engine, "gpu_rollups_1m") == (2 * 10 * 24, now - 10 * DAY)
    assert deleted["gpu_rollups_1h"] == 0 and minimum(engine, "gpu_rollups_1h")[0] == 2 * 20 * 24
    assert deleted["node_rollups_1m"] == 0 and minimum(engine, "node_rollups_1m")[0] == 20 * 24
    assert "events" not in deleted and minimum(engine, "events")[0] == 20  # kept unless named
    # Pruning again at the same time deletes nothing more.
    assert set(prune(engine, now, days={"host_samples": 2, "gpu_rollups_1m": 10}).values()) == {0}
    assert prune(engine, now, days={"events": 5})["events"] == 15
    engine.dispose()


def test_raw_rows_are_kept_until_rolled_up(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    Writer(engine).write_many([batch(T0 + 3600 * h) for h in range(48)])
    now = T0 + 30 * DAY
    assert prune(engine, now)["gpu_samples"] == 0  # never rolled up: nothing is lost
    refresh(engine, now=T0 + 24 * 3600)  # rollups cover the first day only (less the grace hour)
    assert prune(engine, now)["gpu_samples"] == 2 * 23
    assert minimum(engine, "gpu_samples")[1] == T0 + 23 * 3600
    engine.dispose()


def test_pages_read_the_same_numbers_after_raw_samples_are_pruned(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    # Four days at 5 minutes, a daily load cycle.
    Writer(engine).write_many([batch(T0 + 300 * i, util=(i % 288) / 288) for i in range(4 * 288)])
    now = T0 + 4 * DAY
    refresh(engine, now=now)
    scope = readmodels.Scope()
    views = {
        "12 h (1-minute rollups)": (T0 + 6 * 3600, T0 + 18 * 3600),
        "4 days (1-hour rollups)": (T0, now),
    }

    def read() -> dict:
        out = {}
        for name, (start, end) in views.items():
            series, source, _ = readmodels.state_series(engine, scope, start, end)
            assert source.name != "raw"
            hours = sorted(readmodels.gpu_state_hours(engine, scope, start, end), key=lambda r: r["gpu_id"])
            matrix = sorted(readmodels.utilization_matrix(engine, [1, 2], start, end),
                            key=lambda r: (r["gpu_id"], r["ts"]))
            out[name] = (series, hours, matrix)
        return out

    before = read()
    assert before["12 h (1-minute rollups)"][0] and before["4 days (1-hour rollups)"][1]
    deleted = prune(engine, now + 3 * 3600, raw_days=0.1)
    assert deleted["gpu_samples"] > 0 and minimum(engine, "gpu_samples")[1] > T0 + 3 * DAY
    after = read()
    assert after == before  # the same rollup rows, the same SQL: the same numbers, exactly
    engine.dispose()


def test_brin_ranges_emptied_by_a_prune_are_desummarized(pg_url: str) -> None:
    """PostgreSQL: after a prune, the emptied block ranges hold no stale summary that new rows
    would widen into a range matching every query; VACUUM summarizes them afresh."""
    engine = make_engine(pg_url)
    upgrade(engine)
    # About 30,000 GPU rows (several 128-page ranges), in time order as agents write them.
    Writer(engine).write_many([batch(T0 + 10 * i, gpus=8) for i in range(3600)])
    refresh(engine, now=T0 + 2 * DAY)

    def summarize_new() -> int:
        with engine.begin() as conn:
            return int(conn.execute(text("SELECT brin_summarize_new_values('ix_gpu_samples_ts')")).scalar_one())

    summarize_new()
    assert summarize_new() == 0  # everything is summarized
    deleted = prune(engine, T0 + 5 * 3600 + 14 * DAY)  # the first five hours
    assert deleted["gpu_samples"] == 5 * 360 * 8
    assert summarize_new() >= 2  # the ranges the prune emptied had lost their summaries
    engine.dispose()


def test_plan_and_cli_refuse_unknown_tables_and_bad_ages(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan(days={"gpu_samples": 3})["gpu_samples"] == 3 and plan()["node_rollups_1h"] == 365
    with pytest.raises(ValueError, match="alerts"):
        plan(days={"alerts": 3})
    with pytest.raises(ValueError, match="positive"):
        plan(raw_days=0)
    assert main(["db", "prune", "--db", sqlite_url, "--keep", "nodes=3"]) == 2
    assert main(["db", "prune", "--db", sqlite_url, "--keep", "gpu_samples"]) == 2
    err = capsys.readouterr().err
    assert err.count("gpufleet: error:") == 2 and "Traceback" not in err
    assert main(["db", "upgrade", "--db", sqlite_url]) == 0
    assert main(["db", "prune", "--db", sqlite_url, "--keep", "gpu_samples=3", "--keep", "events=30"]) == 0
    assert "gpu_samples" in capsys.readouterr().out
