"""The read models on SQLite and PostgreSQL: which table a range reads, bucket counts, scope."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from collectors.records import Event, GpuInfo, Sample
from db import readmodels as rm
from db.engine import make_engine, upgrade
from db.rollups import refresh
from db.writer import Batch, Writer
from tests.dashboard import seed

T0 = 1_764_000_000.0 - (1_764_000_000.0 % 3600)
END = T0 + 2 * 3600


@pytest.mark.parametrize(("seconds", "source", "step"), [
    (3600, "raw", 60), (6 * 3600, "raw", 300), (6 * 3600 + 1, "1m", 300), (86400, "1m", 600),
    (3 * 86400, "1m", 1800), (3 * 86400 + 1, "1h", 3600), (7 * 86400, "1h", 7200), (30 * 86400, "1h", 21600),
])
def test_source_and_bucket_by_range(seconds: float, source: str, step: int) -> None:
    assert rm.source_for(seconds).name == source
    assert rm.bucket_for(seconds) == step
    assert seconds / step <= rm.MAX_BUCKETS


@pytest.fixture
def layered(store_url: str):  # noqa: ANN201
    """One GPU busy at 90% for two hours; the rollup tables are then overwritten with 50% (1m) and
    20% (1h), so every answer says which table it came from."""
    engine = make_engine(store_url)
    upgrade(engine)
    w = Writer(engine)
    for i in range(120):
        ts = T0 + 60 * i
        w.write(Batch(uuid.uuid4().hex, {"name": "n", "cluster": "c"}, ts, [
            GpuInfo(index=0, uuid="GPU-x", model="M"),
            Sample("gpu", ts, {"gpu_index": 0, "gpu_uuid": "GPU-x"},
                   {"status": "ok", "utilization_gpu_ratio": 0.9, "process_count": 1, "clock_event_reasons": 0x40}),
        ]))
    refresh(engine, now=END)
    with engine.begin() as conn:
        conn.execute(text("UPDATE gpu_rollups_1m SET utilization_avg = 0.5"))
        conn.execute(text("UPDATE gpu_rollups_1h SET utilization_avg = 0.2"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("seconds", "utilization"), [(2 * 3600, 0.9), (86400, 0.5), (7 * 86400, 0.2)])
def test_a_range_reads_raw_then_minute_then_hour_rollups(layered, seconds: float, utilization: float) -> None:  # noqa: ANN001
    start = END - seconds
    hours = rm.gpu_state_hours(layered, rm.Scope(), start, END)
    assert hours[0]["utilization"] == pytest.approx(utilization)
    matrix = rm.utilization_matrix(layered, [hours[0]["gpu_id"]], start, END)
    assert {round(r["utilization"], 6) for r in matrix} == {utilization}
    series, source, step = rm.state_series(layered, rm.Scope(), start, END)
    assert source is rm.source_for(seconds) and len(series) <= rm.MAX_BUCKETS
    assert sum(r["busy"] for r in series) == pytest.approx(len(series))  # one GPU, busy in every bucket
    assert hours[0]["throttled_hours"] == pytest.approx(hours[0]["reported_hours"])
    gpu_rows, gpu_source = rm.gpu_series(layered, [hours[0]["gpu_id"]], start, END)
    assert gpu_source is source and gpu_rows


def test_state_series_and_scope_on_the_seed(store_url: str) -> None:
    engine = seed.seed(store_url)
    start, end = seed.NOW - 6 * 3600, seed.NOW
    series, source, step = rm.state_series(engine, rm.Scope(), start, end)
    last = series[-1]
    assert source is rm.RAW and step == 300
    assert (last["busy"], last["idle_allocated"], last["idle"], last["down"], last["throttled"]) == (8, 1, 2, 1, 4)
    beta = rm.state_series(engine, rm.Scope(clusters=("beta",)), start, end)[0][-1]
    assert beta["reporting"] == 4 and beta["down"] == 1
    assert len(rm.inventory(engine, rm.Scope(models=(seed.A100,)))) == 4
    assert len(rm.inventory(engine, rm.Scope(nodes=("node-a", "node-b"), models=(seed.A100,)))) == 0
    # Unresolved: node-c's XID 79 and gpu_lost, and its ECC error; node-a's XID 48 recovered.
    bad = rm.unresolved_events(engine, rm.Scope(), start, end)
    assert sorted((e["node"], e["kind"]) for e in bad) == [("node-c", "ecc"), ("node-c", "gpu_lost"),
                                                           ("node-c", "xid")]
    assert rm.unresolved_events(engine, rm.Scope(nodes=("node-a",)), start, end) == []
    outages = {(o["kind"], o["code"]): o["ok_again"] for o in rm.outages(engine, rm.Scope(), start, end)}
    assert outages[("xid", "48")] == seed.RECOVERED_AT and outages[("xid", "79")] is None
    summary = rm.event_summary(engine, rm.Scope(clusters=("alpha",)), start, end)
    assert {r["node"] for r in summary} == {"node-a", "node-b"}
    assert rm.node_intervals(engine, seed.NOW) == {n: 60.0 for n in rm.node_intervals(engine, seed.NOW)}
    engine.dispose()


def test_node_level_events_follow_the_node_filter(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    for node in ("n1", "n2"):
        Writer(engine).write(Batch(uuid.uuid4().hex, {"name": node}, T0, [
            GpuInfo(index=0, uuid=f"GPU-{node}", model="M"),
            Event(T0, "agent_down", "critical", "agent was down", fatal=True, category="host")]))
    summary = rm.event_summary(engine, rm.Scope(nodes=("n1",)), T0 - 1, T0 + 1)
    assert [(r["node"], r["gpu_level"], r["count"]) for r in summary] == [("n1", 0, 1)]
    assert len(rm.events(engine, rm.Scope(), T0 - 1, T0 + 1)) == 2


def test_long_ranges_summarise_host_series_from_a_share_of_each_bucket(sqlite_url: str) -> None:
    """Network, disk and filesystem have no rollups: over a week, a bucket reads only the samples
    of its first tenth (so a page costs the same however dense the samples), short ranges read all."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    day, start = 86400.0, 1_764_000_000.0 - (1_764_000_000.0 % 86400)
    batches = []
    for i in range(0, int(7 * day), 600):  # a week at 10 minutes; the rate marks where in its bucket
        ts = start + i
        batches.append(Batch(uuid.uuid4().hex, {"name": "n"}, ts, [
            Sample("interface", ts, {"interface": "ib0"}, {"rx_bytes_per_second": float(i % 7200)})]))
    Writer(engine).write_many(batches)
    node_id = 1  # the only node
    week = rm.interface_series(engine, node_id, start, start + 7 * day)
    step = rm.bucket_for(7 * day, rm.RAW)
    assert step >= rm.SAMPLED_FROM_SECONDS
    # Only offsets within the first tenth of each (2-hour) bucket were read: 0 and 600 s.
    assert max(r["rx_bytes_per_second"] for r in week) <= step * rm.SAMPLED_SHARE
    hours = rm.interface_series(engine, node_id, start, start + 6 * 3600)
    assert max(r["rx_bytes_per_second"] for r in hours) > 3600  # a short range averages every sample
    engine.dispose()
