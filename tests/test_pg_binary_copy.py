"""PostgreSQL's write path sends sample rows as binary COPY with the column types declared. What
must not change with it: a value the binary format cannot carry as the column's type still lands
(the shape goes as text from then on), and a number too large for an ``integer`` column, or a
non-bool in a ``boolean`` one, is taken or refused as text input would, never stored changed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from collectors.records import Sample
from db.engine import make_engine, upgrade
from db.models import GpuSample, IngestedBatch
from db.writer import Batch, Writer

T0 = 1_764_000_000.0


def one(ts: float, values: dict) -> Batch:
    sample = Sample("gpu", ts, {"gpu_index": 0, "gpu_uuid": "GPU-0"}, values)
    return Batch(uuid.uuid4().hex, {"name": "n"}, ts, [sample])


def test_rows_go_as_binary_and_keep_their_values(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    values = {"status": "ok", "power_watts": 123.25, "memory_used_bytes": 2**40, "pcie_link_gen": 5,
              "remapped_rows_pending": True, "utilization_gpu_ratio": None, "temperature_gpu_celsius": 61}
    writer = Writer(engine)
    writer.write(one(T0, values))
    assert not writer._text_copy  # noqa: SLF001 - the fast path was taken
    with engine.connect() as conn:
        row = conn.execute(select(GpuSample.power_watts, GpuSample.memory_used_bytes, GpuSample.pcie_link_gen,
                                  GpuSample.remapped_rows_pending, GpuSample.utilization_gpu_ratio,
                                  GpuSample.temperature_gpu_celsius)).one()
    assert tuple(row) == (123.25, 2**40, 5, True, None, 61.0)
    engine.dispose()


def test_a_value_binary_refuses_goes_as_text(pg_url: str) -> None:
    """A numeric string in a float column: PostgreSQL's text input takes it, the binary dumper does not."""
    engine = make_engine(pg_url)
    upgrade(engine)
    writer = Writer(engine)
    assert writer.write(one(T0, {"status": "ok", "power_watts": "250.5", "sm_clock_hz": 1e9})).written
    assert writer._text_copy  # noqa: SLF001
    assert writer.write(one(T0 + 10, {"status": "ok", "power_watts": 251.0, "sm_clock_hz": 1e9})).written
    with engine.connect() as conn:
        assert conn.execute(select(GpuSample.power_watts).order_by(GpuSample.ts)).scalars().all() == [250.5, 251.0]
        assert conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one() == 2
    engine.dispose()


def test_an_integer_too_large_for_its_column_fails_loudly(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    writer = Writer(engine)
    with pytest.raises(Exception, match="out of range"):
        writer.write(one(T0, {"status": "ok", "process_count": 2**40}))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(GpuSample)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one() == 0
    assert writer.write(one(T0, {"status": "ok", "process_count": 3})).written  # the writer goes on
    engine.dispose()


def test_a_boolean_column_given_anything_but_bools_goes_as_text(pg_url: str) -> None:
    """The binary bool dumper stores the truth of any value ("false" would be true); text input
    parses it, or refuses it with the column named."""
    engine = make_engine(pg_url)
    upgrade(engine)
    writer = Writer(engine)
    assert writer.write(one(T0, {"status": "ok", "remapped_rows_pending": "false",
                                 "remapped_rows_failure": True})).written
    with pytest.raises(Exception, match="boolean"):
        writer.write(one(T0 + 10, {"status": "ok", "remapped_rows_pending": 0.5, "remapped_rows_failure": False}))
    with engine.connect() as conn:
        stored = conn.execute(select(GpuSample.remapped_rows_pending, GpuSample.remapped_rows_failure)).one()
    assert tuple(stored) == (False, True)
    engine.dispose()
