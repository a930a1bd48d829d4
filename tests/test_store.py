"""The store on SQLite and the real PostgreSQL: migrations, round trips, exactly-once batches."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collectors.records import Event, GpuInfo, Sample
from db.engine import StoreError, current_revision, head_revision, make_engine, parse_url, table_names, upgrade
from db.models import Base, DiskSample, Gpu, GpuSample, Heartbeat, HostSample, InterfaceSample, Node
from db.models import Event as EventRow
from db.writer import Batch, Writer

T0 = 1_764_000_000.0


def make_batch(ts: float = T0, *, node: str = "n1", gpus: int = 2, batch_id: str | None = None) -> Batch:
    records: list = []
    for i in range(gpus):
        records.append(GpuInfo(index=i, uuid=f"GPU-{node}-{i}", model="NVIDIA H100 80GB HBM3",
                               memory_total_bytes=80 * 2**30, unsupported=["fan_speed_ratio"]))
        records.append(Sample("gpu", ts, {"gpu_index": i, "gpu_uuid": f"GPU-{node}-{i}"}, {
            "status": "ok", "utilization_gpu_ratio": 0.5 + i / 10, "memory_used_bytes": 2**34,
            "power_watts": 512.5, "fan_speed_ratio": None, "clock_event_reasons": 0x4,
            "remapped_rows_pending": False,
        }))
    records.append(Sample("host", ts, {}, {"cpu_utilization_ratio": 0.25, "memory_total_bytes": 2**40}))
    records.append(Sample("interface", ts, {"interface": "ib0"},
                          {"rx_bytes_total": 123, "speed_bits_per_second": 4e11}))
    records.append(Sample("disk", ts, {"device": "nvme0n1"}, {"read_bytes_total": 4096, "utilization_ratio": None}))
    records.append(Sample("filesystem", ts, {"path": "/"}, {"size_bytes": 10**12}))
    records.append(Sample("gpu_process", ts, {"gpu_index": 0, "gpu_uuid": f"GPU-{node}-0", "pid": 42},
                          {"used_memory_bytes": 2**30}))
    records.append(Event(ts, "xid", "critical", "XID 79", code="79", category="gpu-hardware", fatal=True,
                         gpu_index=1, gpu_uuid=f"GPU-{node}-1", details={"mnemonic": "X"}))
    return Batch(batch_id=batch_id or uuid.uuid4().hex, node={"name": node, "agent_version": "t"}, ts=ts,
                 records=records, collectors={"nvml": {"status": "ok"}})


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_migration_from_empty_matches_models(store_url: str) -> None:
    engine = make_engine(store_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []
    assert set(Base.metadata.tables) <= set(table_names(engine))
    engine.dispose()


def test_round_trip_keeps_values_units_and_nulls(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    result = Writer(engine).write(make_batch())
    assert result.written
    assert result.rows["gpu_samples"] == 2
    with Session(engine) as conn:
        node = conn.execute(select(Node)).scalar_one()
        assert node.name == "n1" and node.last_seen == T0
        gpus = conn.execute(select(Gpu).order_by(Gpu.index)).scalars().all()
        assert [g.uuid for g in gpus] == ["GPU-n1-0", "GPU-n1-1"]
        assert gpus[0].unsupported == ["fan_speed_ratio"]
        assert gpus[0].memory_total_bytes == 80 * 2**30
        rows = conn.execute(select(GpuSample).order_by(GpuSample.gpu_id)).scalars().all()
        assert rows[1].utilization_gpu_ratio == pytest.approx(0.6)
        assert rows[0].memory_used_bytes == 2**34
        assert rows[0].fan_speed_ratio is None and rows[0].temperature_gpu_celsius is None
        assert rows[0].clock_event_reasons == 4 and rows[0].remapped_rows_pending is False
        assert conn.execute(select(InterfaceSample.speed_bits_per_second)).scalar_one() == 4e11
        assert conn.execute(select(DiskSample.utilization_ratio)).scalar_one() is None
        assert conn.execute(select(HostSample.memory_total_bytes)).scalar_one() == 2**40
        ev = conn.execute(select(EventRow)).scalars().one()
        assert ev.gpu_id == gpus[1].id and ev.code == "79" and ev.fatal is True
        assert ev.details == {"mnemonic": "X"}
        assert conn.execute(select(Heartbeat.collectors)).scalar_one() == {"nvml": {"status": "ok"}}
    engine.dispose()


def test_replayed_batch_is_written_once(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    batch = make_batch(batch_id="b-1")
    assert Writer(engine).write(batch).written
    # A new writer (a restarted agent) replays the same spooled batch, plus a new one.
    results = Writer(engine).write_many([batch, make_batch(T0 + 10, batch_id="b-2")])
    assert [r.written for r in results] == [False, True]
    assert count(engine, GpuSample) == 4
    assert count(engine, EventRow) == 2
    with engine.connect() as conn:
        assert conn.execute(select(Node.last_seen)).scalar_one() == T0 + 10
    # An old batch replayed late does not move last_seen back.
    Writer(engine).write(make_batch(T0 - 100))
    with engine.connect() as conn:
        assert conn.execute(select(Node.last_seen)).scalar_one() == T0 + 10
    engine.dispose()


def test_failed_transaction_leaves_nothing_and_forgets_ids(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = Writer(engine)
    bad = make_batch(batch_id="bad")
    bad.records = [*bad.records, Sample("nonsense", T0, {}, {})]
    with pytest.raises(ValueError, match="unknown sample kind"):
        writer.write(bad)
    assert count(engine, Node) == 0 and count(engine, GpuSample) == 0
    assert writer.write(make_batch(batch_id="good")).written  # no stale cached ids
    assert count(engine, GpuSample) == 2
    engine.dispose()


def test_many_nodes_share_one_store(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    w = Writer(engine)
    for n in range(3):
        for k in range(3):
            w.write(make_batch(T0 + k, node=f"n{n}"))
    assert count(engine, Node) == 3 and count(engine, Gpu) == 6 and count(engine, GpuSample) == 18
    engine.dispose()


@pytest.mark.parametrize("url", ["nonsense", "mysql://x@y/z", "sqlite+foo:///x"])
def test_bad_urls_are_one_clear_error(url: str) -> None:
    with pytest.raises(StoreError):
        make_engine(url)


def test_plain_postgres_url_gets_psycopg() -> None:
    assert parse_url("postgres://u@h/db").drivername == "postgresql+psycopg"
