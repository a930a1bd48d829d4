"""What the write path's fast paths must not change: rows whose keys differ from the first row's,
caller-owned dicts mutated between batches, flushes larger than one IN list, last_seen per GPU."""

from __future__ import annotations

import sqlite3
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, text

from collectors.records import Sample
from db.engine import make_engine, upgrade
from db.models import Gpu, GpuSample, Heartbeat, Node
from db.writer import GPU_LAST_SEEN_RESOLUTION, Batch, Writer, new_batch_id

T0 = 1_764_000_000.0


def gpu(node: str, i: int, ts: float, values: dict) -> Sample:
    return Sample("gpu", ts, {"gpu_index": i, "gpu_uuid": f"GPU-{node}-{i}"}, values)


def batch(node: dict, ts: float, records: list, collectors: dict | None = None) -> Batch:
    return Batch(uuid.uuid4().hex, node, ts, records, collectors=collectors or {})


def test_rows_unlike_the_first_keep_every_value(store_url: str) -> None:
    """The first row's keys make the fast getter; a row with other keys, as many keys, keys in
    another order, or an unknown key must still land column by column."""
    engine = make_engine(store_url)
    upgrade(engine)
    first = {"status": "ok", "power_watts": 100.0, "sm_clock_hz": 1e9}
    rows = [
        first,
        {"status": "ok", "power_watts": 101.0, "mem_clock_hz": 2e9},  # as many keys, one different
        {"sm_clock_hz": 3e9, "power_watts": 102.0, "status": "lost"},  # same keys, another order
        {"status": "ok", "power_watts": 103.0, "sm_clock_hz": 4e9, "sm_active_ratio": 0.5},  # one more
        {"status": "ok", "power_watts": 104.0},  # one fewer
        {"status": "ok", "power_watts": 105.0, "no_such_column": 1},  # unknown key: ignored
    ]
    Writer(engine).write(batch({"name": "n"}, T0, [gpu("n", i, T0, v) for i, v in enumerate(rows)]))
    with engine.connect() as conn:
        got = conn.execute(select(GpuSample.power_watts, GpuSample.sm_clock_hz, GpuSample.mem_clock_hz,
                                  GpuSample.status, GpuSample.sm_active_ratio)
                           .order_by(GpuSample.power_watts)).all()
    assert [tuple(r) for r in got] == [
        (100.0, 1e9, None, "ok", None), (101.0, None, 2e9, "ok", None), (102.0, 3e9, None, "lost", None),
        (103.0, 4e9, None, "ok", 0.5), (104.0, None, None, "ok", None), (105.0, None, None, "ok", None),
    ]
    engine.dispose()


def test_dicts_mutated_between_batches_are_written_again(store_url: str) -> None:
    """An agent may reuse and mutate its node description and collector states: the writer's
    'unchanged since last time' shortcuts must see the change."""
    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)
    node = {"name": "n", "labels": {"rack": "r1"}}
    collectors = {"nvml": {"status": "ok"}}
    writer.write(batch(node, T0, [gpu("n", 0, T0, {"status": "ok"})], collectors))
    node["labels"]["rack"] = "r2"
    collectors["nvml"]["status"] = "error"
    writer.write(batch(node, T0 + 10, [gpu("n", 0, T0 + 10, {"status": "ok"})], collectors))
    writer.write(batch(node, T0 + 20, [gpu("n", 0, T0 + 20, {"status": "ok"})]))
    with engine.connect() as conn:
        assert conn.execute(select(Node.labels)).scalar_one() == {"rack": "r2"}
        beats = conn.execute(select(Heartbeat.collectors).order_by(Heartbeat.ts)).scalars().all()
        assert beats == [{"nvml": {"status": "ok"}}, {"nvml": {"status": "error"}}, None]
        # No collector states is unknown: SQL NULL, not the JSON text 'null'.
        assert conn.execute(text("SELECT count(*) FROM heartbeats WHERE collectors IS NULL")).scalar_one() == 1
    engine.dispose()


def test_large_flush_dedupes_and_sets_last_seen_per_gpu(store_url: str) -> None:
    """More batches and GPUs than one SQLite IN list holds (500), GPUs of one flush at different
    times, a GPU whose newest row is not ok, and the whole flush replayed: written once, and each
    GPU's last_seen its newest ok sample."""
    engine = make_engine(store_url)
    upgrade(engine)
    nodes = [f"n{i}" for i in range(130)]
    batches = []
    for k, name in enumerate(nodes):
        ts = T0 + k % 3
        records = [gpu(name, i, ts, {"status": "ok", "power_watts": float(i)}) for i in range(4)]
        if k == 0:  # GPU 0 of n0 is lost later in the same flush: last_seen stays at its ok row
            records.append(gpu(name, 0, ts + 5, {"status": "lost", "power_watts": None}))
        batches.append(batch({"name": name}, ts, records))
    batches += [batch({"name": f"d{i}"}, T0, []) for i in range(400)]  # 530 ids in all
    writer = Writer(engine)
    assert all(r.written for r in writer.write_many(batches))
    assert not any(r.written for r in Writer(engine).write_many(batches))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar_one() == 130 * 4 + 1
        assert conn.execute(text("SELECT count(*) FROM ingested_batches")).scalar_one() == 530
        assert conn.execute(text("SELECT count(*) FROM heartbeats")).scalar_one() == 530
        seen = {u: t for u, t in conn.execute(select(Gpu.uuid, Gpu.last_seen))}
        node_seen = {n: t for n, t in conn.execute(select(Node.name, Node.last_seen))}
    assert len(seen) == 520
    for k, name in enumerate(nodes):
        assert all(seen[f"GPU-{name}-{i}"] == T0 + k % 3 for i in range(4)), name
        assert node_seen[name] == T0 + k % 3
    engine.dispose()


def test_integer_times_and_versions_are_accepted(store_url: str) -> None:
    """Times and versions go to PostgreSQL as arrays, which hold one type: an agent that sends an
    integer time or version next to float ones is still written."""
    engine = make_engine(store_url)
    upgrade(engine)
    t = int(T0)
    Writer(engine).write_many([
        batch({"name": "a", "agent_version": 2}, t, [gpu("a", 0, t, {"status": "ok"})], {"nvml": {}}),
        batch({"name": "b", "agent_version": "1.0"}, T0 + 0.5, [gpu("b", 0, T0 + 0.5, {"status": "ok"})]),
    ])
    with engine.connect() as conn:
        assert sorted(conn.execute(select(Gpu.last_seen)).scalars()) == [T0, T0 + 0.5]
        assert sorted(conn.execute(select(Heartbeat.agent_version)).scalars()) == ["1.0", "2"]
    engine.dispose()


def test_gpu_last_seen_moves_at_its_resolution(store_url: str) -> None:
    """A writer rewrites a GPU's last_seen only once it has moved on by GPU_LAST_SEEN_RESOLUTION
    since the writer last wrote it; a new writer (an agent restart) writes it at once. The node's
    last_seen stays exact."""
    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)

    def write(w: Writer, ts: float) -> None:
        w.write(batch({"name": "n"}, ts, [gpu("n", 0, ts, {"status": "ok"})]))

    def seen() -> tuple[float, float]:
        with engine.connect() as conn:
            return (conn.execute(select(Gpu.last_seen)).scalar_one(), conn.execute(select(Node.last_seen)).scalar_one())

    write(writer, T0)
    assert seen() == (T0, T0)
    write(writer, T0 + 10)
    assert seen() == (T0, T0 + 10)  # within the resolution: the GPU row is left alone
    write(writer, T0 + GPU_LAST_SEEN_RESOLUTION)
    assert seen() == (T0 + GPU_LAST_SEEN_RESOLUTION,) * 2
    write(Writer(engine), T0 + GPU_LAST_SEEN_RESOLUTION + 1)
    assert seen() == (T0 + GPU_LAST_SEEN_RESOLUTION + 1,) * 2
    engine.dispose()


def test_a_flush_mixing_written_and_new_batches_writes_the_new_once(store_url: str) -> None:
    """On PostgreSQL batches are recorded before their rows, optimistically; a flush where some
    batches were written already (a spool replayed after a lost commit reply) must write the
    others once and skip those, on every store."""
    engine = make_engine(store_url)
    upgrade(engine)
    old = [batch({"name": f"n{i}"}, T0, [gpu(f"n{i}", 0, T0, {"status": "ok", "power_watts": 1.0})])
           for i in range(3)]
    Writer(engine).write_many(old[:2])
    new = [batch({"name": f"n{i}"}, T0 + 10, [gpu(f"n{i}", 0, T0 + 10, {"status": "ok", "power_watts": 2.0})])
           for i in range(3)]
    writer = Writer(engine)
    results = writer.write_many([old[0], new[0], old[1], old[2], new[1], new[2], new[0]])
    assert [r.written for r in results] == [False, True, False, True, True, True, False]
    assert results[3].rows == {"gpu_samples": 1}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM ingested_batches")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM heartbeats")).scalar_one() == 6
    # and the writer goes on as before
    assert writer.write(batch({"name": "n0"}, T0 + 20, [gpu("n0", 0, T0 + 20, {"status": "ok"})])).written
    engine.dispose()


def test_rows_in_many_row_inserts_and_the_rest_land_as_given(store_url: str) -> None:
    """On SQLite rows go 50 to an INSERT, the remainder one by one: 123 rows (two full statements and
    23 more) must all land with their own values, in every column sent."""
    engine = make_engine(store_url)
    upgrade(engine)
    records = [gpu("n", i % 4, T0 + i // 4, {"status": "ok" if i % 7 else "lost", "power_watts": float(i),
                                             "sm_clock_hz": 1e9 + i, "process_count": i % 3})
               for i in range(123)]
    assert Writer(engine).write(batch({"name": "n"}, T0 + 31, records)).rows == {"gpu_samples": 123}
    with engine.connect() as conn:
        got = conn.execute(select(GpuSample.ts, Gpu.index, GpuSample.status, GpuSample.power_watts,
                                  GpuSample.sm_clock_hz, GpuSample.process_count)
                           .join(Gpu, Gpu.id == GpuSample.gpu_id).order_by(GpuSample.power_watts)).all()
    assert [tuple(r) for r in got] == [(T0 + i // 4, i % 4, "ok" if i % 7 else "lost", float(i), 1e9 + i, i % 3)
                                       for i in range(123)]
    engine.dispose()


def test_a_writer_that_knows_the_gpus_detects_a_replay_in_a_mixed_flush(store_url: str) -> None:
    """The same, with a writer that already knows every GPU: on PostgreSQL the flush takes the
    overlapped path, finds the replayed batches among those it recorded, rolls back and writes
    the new ones the plain way."""
    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)
    old = [batch({"name": f"n{i}"}, T0, [gpu(f"n{i}", 0, T0, {"status": "ok"})]) for i in range(3)]
    writer.write_many(old)  # every GPU known from here on
    attempts: list[bool] = []
    plain = writer._write_many  # noqa: SLF001

    def spy(conn: Any, batches: Any, check_first: bool) -> Any:
        attempts.append(check_first)
        return plain(conn, batches, check_first)

    writer._write_many = spy  # type: ignore[method-assign]  # noqa: SLF001
    new = [batch({"name": f"n{i}"}, T0 + 10, [gpu(f"n{i}", 0, T0 + 10, {"status": "ok"})]) for i in range(3)]
    results = writer.write_many([old[1], new[0], new[1], old[2], new[2]])
    assert [r.written for r in results] == [False, True, True, False, True]
    if engine.dialect.name == "postgresql":
        assert attempts == [False, True]  # overlapped, replay found, then the plain way
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM ingested_batches")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM heartbeats")).scalar_one() == 6
    engine.dispose()


def _constant_column_records() -> list[Sample]:
    """123 rows over 4 GPUs: a column None in every row, one None but once, one True in every row,
    one False in every row, and one mixing the two."""
    return [gpu("n", i % 4, T0 + i // 4, {
        "status": "ok", "power_watts": float(i), "fan_speed_ratio": None, "error": "boom" if i == 60 else None,
        "remapped_rows_pending": True, "remapped_rows_failure": i % 5 == 0, "nvlink_errors_total": None,
    }) for i in range(123)]


def test_columns_none_or_one_bool_in_every_row_land_as_given(store_url: str) -> None:
    """On SQLite a column that is None, or the same bool, in every row goes in as a literal; each
    row must still read back with its own values (two full many-row INSERTs and 23 more rows)."""
    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)
    assert writer.write(batch({"name": "n"}, T0 + 31, _constant_column_records())).rows == {"gpu_samples": 123}
    # a second transaction whose pattern differs: the first column now has a value, the bool flips
    writer.write(batch({"name": "n"}, T0 + 40, [gpu("n", g, T0 + 40, {
        "status": "ok", "power_watts": 500.0 + g, "fan_speed_ratio": 0.5, "error": None,
        "remapped_rows_pending": False, "remapped_rows_failure": False, "nvlink_errors_total": None,
    }) for g in range(4)]))
    with engine.connect() as conn:
        got = conn.execute(select(GpuSample.power_watts, GpuSample.fan_speed_ratio, GpuSample.error,
                                  GpuSample.remapped_rows_pending, GpuSample.remapped_rows_failure,
                                  GpuSample.nvlink_errors_total).order_by(GpuSample.power_watts)).all()
    assert [tuple(r) for r in got] == [
        *[(float(i), None, "boom" if i == 60 else None, True, i % 5 == 0, None) for i in range(123)],
        *[(500.0 + g, 0.5, None, False, False, None) for g in range(4)],
    ]
    engine.dispose()


def test_sqlite_binds_no_none_or_bool_that_is_the_same_in_every_row(sqlite_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The sqlite3 module sends every None and bool it binds through its adapter registry; counting
    the calls shows which were bound. Only the mixed columns' values may be: "error" (None but
    once) and the bool column that is not the same in every row."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    writer = Writer(engine)
    writer.write(batch({"name": "n"}, T0 - 10, [gpu("n", g, T0 - 10, {"status": "ok"}) for g in range(4)]))
    bound: list[Any] = []

    def count(value: Any) -> Any:
        bound.append(value)
        return value

    for kind in (type(None), bool):
        monkeypatch.setitem(sqlite3.adapters, (kind, sqlite3.PrepareProtocol), count)
    writer.write(batch({"name": "n"}, T0 - 5, [gpu("n", 0, T0 - 5, {"status": "ok"})]))
    besides = sorted(map(repr, bound))  # what the rest of a transaction binds (the heartbeat's NULLs)
    bound.clear()
    assert writer.write(batch({"name": "n"}, T0 + 31, _constant_column_records())).rows == {"gpu_samples": 123}
    # 122 Nones of "error", 123 bools of "remapped_rows_failure"; not the 123 × 3 of the columns
    # that are None or True in every row
    assert sorted(map(repr, bound)) == sorted(besides + ["None"] * 122 + [repr(i % 5 == 0) for i in range(123)])
    engine.dispose()


def test_a_new_gpu_elsewhere_does_not_forget_the_known_nodes(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a batch with a GPU the writer has not seen goes again the plain way; only the
    nodes that try inserted or described may be forgotten, not every node the writer knows (each
    would cost a lookup on its next batch)."""
    import db.writer

    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)
    writer.write(batch({"name": "a"}, T0, [gpu("a", 0, T0, {"status": "ok"})]))
    looked_up: list[str] = []
    ensure_node = db.writer.ensure_node

    def spy(conn: Any, name: str, *args: Any, **kw: Any) -> int:
        looked_up.append(name)
        return ensure_node(conn, name, *args, **kw)

    monkeypatch.setattr(db.writer, "ensure_node", spy)
    writer.write(batch({"name": "b"}, T0, [gpu("b", 0, T0, {"status": "ok"})]))  # new node, new GPU
    writer.write(batch({"name": "a"}, T0 + 10, [gpu("a", 0, T0 + 10, {"status": "ok"})]))
    assert "a" not in looked_up
    assert set(looked_up) == {"b"}
    with engine.connect() as conn:
        got = conn.execute(select(Node.name, GpuSample.ts).join(Node, Node.id == GpuSample.node_id)
                           .order_by(Node.name, GpuSample.ts)).all()
    assert [tuple(r) for r in got] == [("a", T0), ("a", T0 + 10), ("b", T0)]
    engine.dispose()


def test_batch_ids_are_unique_and_sort_in_the_order_they_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time-ordered ids keep ``ingested_batches``' primary key growing at its right edge."""
    import db.writer

    ids = [new_batch_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    clock = iter(range(1_764_000_000_000_000_000, 1_764_000_001_000_000_000, 1_000_000))  # a ms apart
    monkeypatch.setattr(db.writer, "time", SimpleNamespace(time_ns=lambda: next(clock)))  # this module's only
    made = [new_batch_id() for _ in range(500)]
    assert made == sorted(made)


def test_the_agent_names_its_batches_in_time_order(tmp_path: Any) -> None:
    from agent.loop import Agent
    from agent.spool import Spool

    agent = Agent(node={"name": "n"}, collectors=[], spool=Spool(tmp_path / "spool"), store=None, interval=10.0)
    first = agent.cycle()
    time.sleep(0.002)
    second = agent.cycle()
    assert len(first) == 32 and first < second
    assert int(first[:12], 16) == pytest.approx(time.time() * 1000, abs=5000)
