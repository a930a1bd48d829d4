"""``gpufleet import prometheus`` against a real Prometheus scraping a dcgm-exporter stand-in and a
real node_exporter every second: values in gpufleet units, exactly once, XID events, the cursor."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from db.engine import make_engine, upgrade
from db.models import (
    DiskSample,
    Event,
    FilesystemSample,
    Gpu,
    GpuSample,
    HostSample,
    ImportCursor,
    IngestedBatch,
    InterfaceSample,
    Node,
)
from gpufleet.cli import main
from gpufleet.promimport import PrometheusImporter
from gpufleet.promsource import PromSource
from tests.conftest import free_port
from tests.importers.promstack import DRIVER, MODEL, NODE, UUIDS, Stack, start_stack

MIB = 2**20
SAMPLE_MODELS = (GpuSample, InterfaceSample, DiskSample, FilesystemSample, HostSample, Event)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with a few seconds of history in which GPU 1's XID gauge changes from 0 to 79."""
    for s in start_stack(tmp_path_factory.mktemp("prom")):
        s.wait_for('count_over_time(DCGM_FI_DEV_XID_ERRORS{gpu="1"}[1m])', 4)
        s.wait_for("count(node_network_receive_bytes_total)", 1)
        s.fake.xid = 79
        s.wait_for('count_over_time((DCGM_FI_DEV_XID_ERRORS{gpu="1"} == 79)[1m:1s])', 3)
        yield s


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {m.__tablename__: conn.execute(select(func.count()).select_from(m)).scalar_one() for m in SAMPLE_MODELS}
    engine.dispose()
    return out


def run_import(stack: Stack, url: str, start: float, end: float, *extra: str) -> int:
    return main(["import", "prometheus", "--url", stack.url, "--start", f"{start:.3f}", "--end", f"{end:.3f}",
                 "--step", "1s", "--db", url, *extra])


def test_import_reproduces_values_in_gpufleet_units(stack: Stack, sqlite_url: str, capsys) -> None:
    end = time.time() - 2
    assert run_import(stack, sqlite_url, stack.started, end) == 0
    assert "XID events" in capsys.readouterr().out
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        node = conn.execute(select(Node)).one()  # both exporters name the same node
        assert node.name == NODE and node.driver_version == DRIVER
        gpus = {g.uuid: g for g in conn.execute(select(Gpu))}
        assert {u: (g.index, g.model) for u, g in gpus.items()} == {UUIDS[0]: (0, MODEL), UUIDS[1]: (1, MODEL)}
        rows = conn.execute(select(GpuSample).where(GpuSample.gpu_id == gpus[UUIDS[0]].id)
                            .order_by(GpuSample.ts)).all()
        assert len(rows) >= 5 and all(r.ts == int(r.ts) for r in rows)  # on the 1 s grid
        r = rows[-1]
        assert r.status == "ok" and r.node_id == node.id
        assert r.utilization_gpu_ratio == pytest.approx(0.37) and r.utilization_memory_ratio == pytest.approx(0.12)
        assert (r.memory_used_bytes, r.memory_free_bytes) == (2024 * MIB, 79000 * MIB)
        assert r.memory_total_bytes == (2024 + 79000 + 535) * MIB  # used + free + reserved
        assert (r.temperature_gpu_celsius, r.temperature_memory_celsius, r.power_watts) == (41, 48, 312.5)
        assert (r.sm_clock_hz, r.mem_clock_hz) == (1980e6, 2619e6)
        assert r.pcie_tx_bytes_per_second == 1.5e9 and r.pcie_rx_bytes_per_second == 2.5e8  # profiling wins
        assert r.pcie_replay_total == 3 and r.nvlink_bytes_per_second == 1234e3
        assert (r.remapped_rows_correctable, r.remapped_rows_uncorrectable, r.remapped_rows_failure) == (2, 0, False)
        assert (r.gr_engine_active_ratio, r.sm_active_ratio, r.sm_occupancy_ratio, r.tensor_active_ratio,
                r.dram_active_ratio) == (0.912, 0.85, 0.41, 0.55, 0.3)
        for r in rows:  # the counter: whatever Prometheus holds at that instant, in joules
            mj = stack.value_at(f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{UUID="{UUIDS[0]}"}}', r.ts)
            assert r.energy_joules_total == pytest.approx(mj / 1000)
        gpu1 = conn.execute(select(GpuSample).where(GpuSample.gpu_id == gpus[UUIDS[1]].id)
                            .order_by(GpuSample.ts.desc()).limit(1)).one()
        assert gpu1.remapped_rows_failure is True and gpu1.utilization_gpu_ratio == 0.0

        (xid,) = conn.execute(select(Event)).all()  # 0 -> 79 is one event, 79 -> 79 none
        assert (xid.kind, xid.code, xid.gpu_index, xid.gpu_id, xid.fatal) == ("xid", "79", 1, gpus[UUIDS[1]].id, True)
        assert xid.category == "gpu-hardware" and xid.severity == "critical" and xid.recommended_action
        assert stack.value_at(f'DCGM_FI_DEV_XID_ERRORS{{UUID="{UUIDS[1]}"}}', xid.ts) == 79
        assert stack.value_at(f'DCGM_FI_DEV_XID_ERRORS{{UUID="{UUIDS[1]}"}}', xid.ts - 1) == 0

        fs = conn.execute(select(FilesystemSample).where(FilesystemSample.path == "/")
                          .order_by(FilesystemSample.ts.desc()).limit(1)).one()
        size = stack.value_at(f'node_filesystem_size_bytes{{mountpoint="/",instance="{stack.node_instance}"}}', fs.ts)
        free = stack.value_at(f'node_filesystem_free_bytes{{mountpoint="/",instance="{stack.node_instance}"}}', fs.ts)
        assert (fs.size_bytes, fs.used_bytes) == (size, size - free) and fs.fstype

        ifaces = conn.execute(select(InterfaceSample).order_by(InterfaceSample.ts)).all()
        assert ifaces and "lo" not in {i.interface for i in ifaces}  # the agent skips loopback too
        last = ifaces[-1]
        sel = f'{{device="{last.interface}",instance="{stack.node_instance}"}}'
        rx, rx_before = (stack.value_at(f"node_network_receive_bytes_total{sel}", last.ts - d) for d in (0, 1))
        assert last.rx_bytes_total == rx and last.rx_bytes_per_second == pytest.approx(rx - rx_before)
        assert last.kind in ("ethernet", "infiniband", "other")

        host = conn.execute(select(HostSample).order_by(HostSample.ts.desc()).limit(1)).one()
        assert host.memory_total_bytes == stack.value_at(
            f'node_memory_MemTotal_bytes{{instance="{stack.node_instance}"}}', host.ts)
        disks = conn.execute(select(func.count()).select_from(DiskSample)).scalar_one()
        assert disks > 0
    engine.dispose()


def test_second_import_adds_nothing_and_overlaps_are_skipped(stack: Stack, store_url: str) -> None:
    end = time.time() - 2
    mid = (stack.started + end) / 2
    assert run_import(stack, store_url, stack.started, mid) == 0
    first = counts(store_url)
    assert run_import(stack, store_url, stack.started, mid) == 0
    assert counts(store_url) == first  # same range: every batch recognised
    assert run_import(stack, store_url, mid - 3, end) == 0  # overlaps 3 s: those rows are not stored twice
    both = counts(store_url)
    assert both["gpu_samples"] > first["gpu_samples"] and both["events"] == 1
    assert run_import(stack, store_url, stack.started, end) == 0  # cut differently: still nothing new
    assert counts(store_url) == both
    engine = make_engine(store_url)
    with engine.connect() as conn:
        ts = conn.execute(select(GpuSample.ts).join(Gpu).where(Gpu.uuid == UUIDS[0]).order_by(GpuSample.ts)).scalars()
        ts = list(ts)
        assert ts == [ts[0] + i for i in range(len(ts))]  # contiguous, nothing skipped at the seams
    engine.dispose()


def test_continuous_import_resumes_after_its_cursor(stack: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    start = time.time() - 6
    first = PrometheusImporter(engine, PromSource(stack.url), 1).follow(start, threading.Event(), lag=1.5, rounds=1)
    with engine.connect() as conn:
        cursor = conn.execute(select(ImportCursor)).one()
    assert cursor.done_until == first.done_until and cursor.url == stack.url
    time.sleep(2.5)
    # A new importer (a restart): resumes after the cursor, whatever --start says.
    second = PrometheusImporter(engine, PromSource(stack.url), 1).follow(start - 60, threading.Event(), lag=1.5,
                                                                         rounds=1)
    assert second.done_until is not None and second.done_until >= cursor.done_until + 2
    assert second.skipped_rows == 0  # nothing re-read
    with engine.connect() as conn:
        ts = list(conn.execute(select(GpuSample.ts).join(Gpu).where(Gpu.uuid == UUIDS[0])
                               .order_by(GpuSample.ts)).scalars())
        assert ts == [math.ceil(start) + i for i in range(len(ts))] and ts[-1] == second.done_until
    engine.dispose()


class _FailingSession(requests.Session):
    """Lets ``ok`` requests through, then the network goes away."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def request(self, *args, **kwargs):  # type: ignore[override]
        self.ok -= 1
        if self.ok < 0:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        return super().request(*args, **kwargs)


def test_a_failed_chunk_leaves_only_what_the_cursor_says(stack: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    source = PromSource(stack.url, session=_FailingSession(ok=3))  # series count, two chunks, then gone
    importer = PrometheusImporter(engine, source, 1, point_budget=1)  # one step per chunk
    stats = importer.follow(time.time() - 8, threading.Event(), lag=1.5, rounds=1)
    assert stats.chunks == 2
    with engine.connect() as conn:
        cursor = conn.execute(select(ImportCursor.done_until)).scalar_one()
        newest = conn.execute(select(func.max(GpuSample.ts))).scalar_one()
        batches = conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one()
    assert newest == cursor == stats.done_until and batches == 2
    engine.dispose()


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "ftp://example.com"], "invalid Prometheus URL"),
    (["--url", "http://127.0.0.1:{dead}"], "cannot reach Prometheus at http://127.0.0.1:{dead}: Connection refused"),
    (["--url", "{prom}", "--start", "yesterday"], "--start 'yesterday' is not a time"),
    (["--url", "{prom}", "--start=-1h", "--end=-2h"], "is not after --start"),
    (["--url", "{prom}", "--start=-1x"], "expected a duration like -6h"),
    (["--url", "{prom}", "--step", "0.5"], "whole number of seconds"),
    (["--url", "{dcgm}"], "did not answer like a Prometheus server"),
    (["--url", "{prom}/no/such/prefix"], "answered HTTP 404"),
])
def test_bad_input_is_one_line_and_exit_2(stack: Stack, tmp_path: Path, capsys, args: list[str],
                                          message: str) -> None:
    names = {"dead": free_port(), "prom": stack.url, "dcgm": f"http://{stack.dcgm_instance}"}
    args = [a.format(**names) for a in args]
    store = tmp_path / "never.db"
    assert main(["import", "prometheus", *args, "--db", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpufleet: error: ") and "\n" not in err and message.format(**names) in err
    assert not store.exists()  # nothing written, not even a schema
