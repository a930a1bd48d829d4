"""One chunk of ``gpufleet import prometheus`` without a server: decoding an answer, mapping it to
column blocks, and the write path's column-major records (``SampleColumns``) on both stores."""

from __future__ import annotations

import gc
import json
import math
import sys

import pytest
from sqlalchemy import select

from db.engine import make_engine, upgrade
from db.models import Gpu, GpuSample, InterfaceSample
from db.writer import Batch, SampleColumns, Writer
from gpufleet.promimport import SWITCH_INTERVAL, _blocks, _bulk_mode, map_chunk
from gpufleet.promsource import Series, decode_series

STEP = 15
A = 1_700_000_100  # the chunk's first grid point; its query starts one step earlier
B = A + 3 * STEP
GRID = [float(A - STEP + i * STEP) for i in range(5)]
DCGM = {"Hostname": "gpu-01", "modelName": "NVIDIA H100 80GB HBM3", "DCGM_FI_DRIVER_VERSION": "550.54.15"}
GPU0 = {**DCGM, "gpu": "0", "UUID": "GPU-0"}
GPU1 = {**DCGM, "gpu": "1", "UUID": "GPU-1"}
NODE = {"instance": "10.0.0.1:9100"}


def answer(series: list[tuple[dict[str, str], list[tuple[float, str]]]]) -> bytes:
    """A ``query_range`` answer as Prometheus writes it: values as text."""
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": m, "values": [[t, v] for t, v in points]} for m, points in series]}}).encode()


def reference(body: bytes) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    return [(s["metric"], [(t, float(v)) for t, v in s["values"]]) for s in json.loads(body)["data"]["result"]]


@pytest.mark.parametrize("text", ["12", "0.912", "1.25e+09", "NaN", "-Inf", "+Inf", "1e-07"])
def test_answers_decode_to_float_values(text: str) -> None:
    body = answer([({"__name__": "DCGM_FI_DEV_GPU_TEMP", **GPU0}, [(GRID[0], "41"), (GRID[1], text)]),
                   ({"__name__": "node_load1", **NODE}, [])])
    got = [(s.metric, s.values) for s in decode_series(body)]
    want = reference(body)
    assert [m for m, _ in got] == [m for m, _ in want]
    for (_, values), (_, expected) in zip(got, want, strict=True):
        assert [t for t, _ in values] == [t for t, _ in expected]
        assert all(x == y or (math.isnan(x) and math.isnan(y)) for (_, x), (_, y) in zip(values, expected, strict=True))
        assert all(type(x) is float for _, x in values)


def test_an_answer_that_is_not_the_apis_json_is_a_value_error() -> None:
    for body in (b"<html>", b'{"status": "success"}', b"[1, 2]"):
        with pytest.raises((ValueError, KeyError, TypeError)):  # what PromSource turns into one line
            decode_series(body)


def series(metric: str, labels: dict[str, str], values: dict[int, float]) -> Series:
    return Series({"__name__": metric, **labels}, [(GRID[i], v) for i, v in sorted(values.items())])


def test_a_chunk_maps_to_rows_where_some_series_had_a_point() -> None:
    chunk = map_chunk([
        series("node_uname_info", {**NODE, "nodename": "gpu-01"}, {i: 1.0 for i in range(5)}),
        series("DCGM_FI_DEV_GPU_UTIL", GPU0, {i: 10.0 * i for i in range(5)}),
        series("DCGM_FI_DEV_XID_ERRORS", GPU0, {0: 0.0, 1: 0.0, 2: 79.0, 3: 79.0, 4: 0.0}),
        series("DCGM_FI_DEV_GPU_UTIL", GPU1, {0: 50.0, 1: 50.0, 3: 75.0}),  # no points at 2 and 4
        series("DCGM_FI_DEV_FB_USED", GPU1, {4: 1024.0}),
        series("node_network_receive_bytes_total", {**NODE, "device": "eth0"}, {i: 1500.0 * i for i in range(5)}),
    ], A, B, STEP)
    assert chunk.points == 5 + 5 + 5 + 3 + 1 + 5 and list(chunk.nodes) == ["gpu-01"]
    data = chunk.nodes["gpu-01"]
    assert [(e.ts, e.code) for e in data.events] == [(GRID[2], "79")]  # 0 -> 79 once; 79 -> 0 is none

    blocks, skipped = _blocks(data, set(), "gpu-01", A - STEP, 5, STEP)
    by_key = {(b.kind, tuple(b.key.values())): b for b in blocks}
    assert skipped == 0 and set(by_key) == {("gpu", (0, "GPU-0")), ("gpu", (1, "GPU-1")), ("interface", ("eth0",))}
    gpu0, gpu1, eth0 = by_key[("gpu", (0, "GPU-0"))], by_key[("gpu", (1, "GPU-1"))], by_key[("interface", ("eth0",))]
    assert gpu0.ts == GRID[1:] and gpu0.columns["utilization_gpu_ratio"] == [0.1, 0.2, 0.3, 0.4]
    assert gpu0.columns["status"] == ["ok"] * 4
    assert gpu1.ts == [GRID[1], GRID[3], GRID[4]]  # the point before the chunk is never a row
    assert gpu1.columns["utilization_gpu_ratio"] == [0.5, 0.75, None]
    assert gpu1.columns["memory_used_bytes"] == [None, None, 1024 * 2**20]
    assert all(len(c) == len(b.ts) for b in blocks for c in b.columns.values())
    assert eth0.ts == GRID[1:] and eth0.columns["rx_bytes_per_second"] == [100.0] * 4  # from the point before

    stored = {("gpu", "GPU-0", GRID[2])}  # an earlier, overlapping import has this row
    blocks, skipped = _blocks(data, stored, "gpu-01", A - STEP, 5, STEP)
    gpu0 = next(b for b in blocks if b.key.get("gpu_uuid") == "GPU-0")
    assert skipped == 1 and gpu0.ts == [GRID[1], GRID[3], GRID[4]]
    assert gpu0.columns["utilization_gpu_ratio"] == [0.1, 0.3, 0.4]


def test_bulk_mode_restores_the_gc_and_the_switch_interval() -> None:
    before = sys.getswitchinterval()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _bulk_mode():
        assert not gc.isenabled() and sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        raise RuntimeError
    assert gc.isenabled() and sys.getswitchinterval() == before


def test_sample_columns_are_stored_as_rows(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    writer = Writer(engine)
    ts = [GRID[1], GRID[2], GRID[3]]
    gpu = SampleColumns("gpu", {"gpu_index": 0, "gpu_uuid": "GPU-0"}, ts, {
        "status": ["ok", "ok", "error"], "utilization_gpu_ratio": [0.25, None, 0.75],
        "memory_used_bytes": [2**34, 2**34, None], "remapped_rows_failure": [False, True, None]})
    eth = SampleColumns("interface", {"interface": "eth0"}, ts[:2], {"rx_bytes_total": [10, 20]})
    batch = Batch("b1", {"name": "gpu-01"}, ts[-1], [gpu, eth])
    (result,) = writer.write_many([batch])
    assert result.rows == {"gpu_samples": 3, "interface_samples": 2}
    with engine.connect() as conn:
        rows = conn.execute(select(GpuSample.ts, GpuSample.status, GpuSample.utilization_gpu_ratio,
                                   GpuSample.memory_used_bytes, GpuSample.remapped_rows_failure)
                            .order_by(GpuSample.ts)).all()
        assert [tuple(r) for r in rows] == [(ts[0], "ok", 0.25, 2**34, False), (ts[1], "ok", None, 2**34, True),
                                            (ts[2], "error", 0.75, None, None)]
        assert conn.execute(select(Gpu.last_seen)).scalar_one() == ts[1]  # the newest row saying "ok"
        assert conn.execute(select(InterfaceSample.ts, InterfaceSample.rx_bytes_total)
                            .order_by(InterfaceSample.ts)).all() == [(ts[0], 10), (ts[1], 20)]
    for bad in (SampleColumns("gpu", gpu.key, ts, {"no_such_column": [1, 2, 3]}),
                SampleColumns("gpu", gpu.key, ts, {"power_watts": [1.0, 2.0]}),
                SampleColumns("nonsense", {}, ts, {})):
        with pytest.raises(ValueError):
            writer.write_many([Batch("b2", {"name": "gpu-01"}, ts[-1], [bad])])
    with engine.connect() as conn:
        assert len(conn.execute(select(GpuSample.ts)).all()) == 3  # a refused batch writes nothing
    engine.dispose()
