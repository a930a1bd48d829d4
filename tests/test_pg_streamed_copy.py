"""PostgreSQL, a large transaction (an agent's backlog): the GPU rows past the first
``_ROWS_BEFORE_COPY`` are built, checked and sent during the COPY, while the server inserts those
before. What must not change with it: every row lands once with its values, a row unlike its
group's first still lands, a GPU first seen late in the backlog is registered, a value the binary
format refuses late in the backlog sends the shape as text, a value no format takes fails loudly
with nothing stored, and the GPUs' last_seen comes from the whole backlog."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

import db.writer
from collectors.records import Sample
from db.engine import make_engine, upgrade
from db.models import Gpu, GpuSample, IngestedBatch
from db.writer import GPU_LAST_SEEN_RESOLUTION, Batch, Writer

T0 = 1_764_000_000.0
GPUS = 4
STEPS = 700  # 4 GPUs × 700 timestamps = 2,800 rows: 1,024 before the COPY, then two chunks and a part


def sample(gpu: int, ts: float, values: dict[str, Any]) -> Sample:
    return Sample("gpu", ts, {"gpu_index": gpu, "gpu_uuid": f"GPU-{gpu}"}, values)


def values(i: int) -> dict[str, Any]:
    return {"status": "ok", "power_watts": float(i), "process_count": i % 5, "remapped_rows_pending": i % 2 == 0,
            "sm_clock_hz": 1e9 + i}


def backlog(start: float, change: dict[int, dict[str, Any]] | None = None, gpus: int = GPUS,
            replace: dict[int, dict[str, Any]] | None = None) -> Batch:
    records = []
    for i in range(STEPS * gpus):
        v = (replace or {}).get(i) or values(i) | (change or {}).get(i, {})
        records.append(sample(i % gpus, start + 10.0 * (i // gpus), v))
    return Batch(uuid.uuid4().hex, {"name": "n"}, start + 10.0 * (STEPS - 1), records)


@pytest.fixture
def store(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    upgrade(engine)
    writer = Writer(engine)
    writer.write(Batch(uuid.uuid4().hex, {"name": "n"}, T0 - 10,
                       [sample(g, T0 - 10, values(0)) for g in range(GPUS)]))  # the GPUs known
    yield engine, writer
    engine.dispose()


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows went through the streamed COPY (calls of ``Writer._stream_gpu_rows``)."""
    calls: list[int] = []
    stream = Writer._stream_gpu_rows

    def spy(self: Writer, conn: Any, raw: Any, key: Any, ready: list[Any], binary: Any, parts: list[Any],
            *args: Any) -> None:
        calls.append(len(ready) + sum(len(p[2]) for p in parts))
        stream(self, conn, raw, key, ready, binary, parts, *args)

    monkeypatch.setattr(Writer, "_stream_gpu_rows", spy)
    return calls


def stored(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Gpu.index, GpuSample.ts, GpuSample.power_watts, GpuSample.process_count,
                   GpuSample.remapped_rows_pending, GpuSample.sm_clock_hz, GpuSample.mem_clock_hz, GpuSample.status)
            .join(Gpu, Gpu.id == GpuSample.gpu_id).where(GpuSample.ts >= T0).order_by(GpuSample.ts, Gpu.index))]


def expected(change: dict[int, dict[str, Any]] | None = None, gpus: int = GPUS) -> list[tuple[Any, ...]]:
    out = []
    for i in range(STEPS * gpus):
        v = values(i) | (change or {}).get(i, {})
        out.append((i % gpus, T0 + 10.0 * (i // gpus), float(v["power_watts"]), v["process_count"],
                    v["remapped_rows_pending"], v.get("sm_clock_hz"), v.get("mem_clock_hz"), v["status"]))
    return out


def test_a_backlog_streams_every_row_once_with_its_values(store: Any, streamed: list[int]) -> None:
    engine, writer = store
    # late rows unlike the first: one with another column instead of one, and a lost GPU
    odd = {k: v for k, v in values(2000).items() if k != "sm_clock_hz"} | {"mem_clock_hz": 2e9}
    change = {2601: {"status": "lost"}}
    result = writer.write(backlog(T0, change, replace={2000: odd}))
    assert result.rows == {"gpu_samples": STEPS * GPUS}
    assert streamed == [STEPS * GPUS]  # every sample through one streamed COPY (the odd row then in its own)
    want = expected(change)
    want[2000] = (0, T0 + 5000.0, 2000.0, 0, True, None, 2e9, "ok")
    assert stored(engine) == want
    with engine.connect() as conn:
        seen = dict(conn.execute(select(Gpu.index, Gpu.last_seen)).all())
    newest = T0 + 10.0 * (STEPS - 1)
    assert seen == {0: newest, 1: newest, 2: newest, 3: newest}
    assert STEPS * 10.0 > GPU_LAST_SEEN_RESOLUTION  # so the backlog's last_seen was due
    with engine.connect() as conn:  # row 2601 (GPU 1) was lost; GPU 1's newest ok is still the last step
        lost = select(func.count()).select_from(GpuSample).where(GpuSample.status == "lost")
        assert conn.execute(lost).scalar_one() == 1


def test_a_gpu_first_seen_late_in_a_backlog_is_registered(store: Any) -> None:
    """A GPU the writer does not know, first seen past the rows built before the COPY: the COPY is
    abandoned, the GPU registered, and the batch written the plain way."""
    engine, writer = store
    late = 2 * db.writer._ROWS_BEFORE_COPY  # noqa: SLF001
    base = backlog(T0)
    batch = Batch(base.batch_id, base.node, base.ts,
                  [*base.records, sample(GPUS, T0 + 10.0 * (late // GPUS), values(late))])  # GPU 4, only here
    assert writer.write(batch).rows == {"gpu_samples": STEPS * GPUS + 1}
    want = sorted([*expected(), (GPUS, T0 + 10.0 * (late // GPUS), float(late), late % 5, late % 2 == 0, 1e9 + late,
                                 None, "ok")], key=lambda r: (r[1], r[0]))
    assert stored(engine) == want


def test_shapes_streamed_one_after_another_check_the_rows_that_joined_them(store: Any) -> None:
    """Two batches, both streamed: the first's odd row joins the table-order shape during its COPY;
    the second is all of that shape (its first sample has one key), so the odd row goes in that
    shape's COPY, which must check it again (binary COPY would store the truth of "false")."""
    engine, writer = store
    first = backlog(T0, replace={1500: {k: v for k, v in values(1500).items() if k != "sm_clock_hz"}
                                 | {"remapped_rows_pending": "false"}})
    second = Batch(uuid.uuid4().hex, {"name": "n"}, T0 + 10.0 * STEPS,
                   [sample(g, T0 + 10.0 * STEPS, {"status": "lost"}) for g in range(GPUS)])
    assert [r.written for r in writer.write_many([first, second])] == [True, True]
    with engine.connect() as conn:
        odd = (Gpu.index == 1500 % GPUS) & (GpuSample.ts == T0 + 10.0 * (1500 // GPUS))
        pending = conn.execute(select(GpuSample.remapped_rows_pending).join(Gpu, Gpu.id == GpuSample.gpu_id)
                               .where(odd)).scalar_one()
        lost = conn.execute(select(func.count()).select_from(GpuSample).where(GpuSample.status == "lost")).scalar_one()
    assert pending is False
    assert lost == GPUS


def test_a_value_binary_refuses_late_in_a_backlog_sends_the_shape_as_text(store: Any, streamed: list[int]) -> None:
    engine, writer = store
    change = {2500: {"power_watts": "2500"}}  # a numeric string: text input takes it, the binary dumper not
    assert writer.write(backlog(T0, change)).written
    assert writer._text_copy  # noqa: SLF001
    assert stored(engine) == expected()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one() == 2


def test_a_bool_column_given_a_string_late_in_a_backlog_is_parsed(store: Any) -> None:
    """Binary COPY would store the truth of "false"; the chunk check sends the shape as text."""
    engine, writer = store
    change = {2300: {"remapped_rows_pending": "false"}}
    assert writer.write(backlog(T0, change)).written
    want = expected()
    want[2300] = want[2300][:4] + (False,) + want[2300][5:]
    assert stored(engine) == want


def test_an_integer_too_large_late_in_a_backlog_fails_loudly_and_stores_nothing(store: Any) -> None:
    engine, writer = store
    with pytest.raises(Exception, match="out of range"):
        writer.write(backlog(T0, {2700: {"process_count": 2**40}}))
    assert stored(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one() == 1
    assert writer.write(backlog(T0)).written  # the writer goes on
    assert stored(engine) == expected()


def test_a_small_transaction_is_not_streamed(store: Any, streamed: list[int]) -> None:
    engine, writer = store
    batch = Batch(uuid.uuid4().hex, {"name": "n"}, T0, [sample(g, T0, values(g)) for g in range(GPUS)])
    assert writer.write(batch).written
    assert streamed == []
    assert db.writer._ROWS_BEFORE_COPY >= GPUS  # noqa: SLF001


def test_a_row_unlike_its_group_late_in_a_backlog_is_checked_too(store: Any) -> None:
    """Such a row joins the table-order shape during the COPY, after that shape was checked before
    it: the check must be made again, or binary COPY would store the truth of "false"."""
    engine, writer = store
    odd = {k: v for k, v in values(2200).items() if k != "sm_clock_hz"} | {"remapped_rows_pending": "false"}
    assert writer.write(backlog(T0, replace={2200: odd})).written
    want = expected()
    want[2200] = (0, T0 + 5500.0, 2200.0, 0, False, None, None, "ok")
    assert stored(engine) == want
