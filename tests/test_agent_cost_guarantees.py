"""What keeps the agent's cycle cheap (issue #2), held to giving the same answers: the fake NVML's
per-model field table and per-request plans, the counters it reuses within a tick, the exporter's
number cache (zeros included), the /metrics server reusing its threads without letting one stalled
client hold up another, swap read from meminfo, and link speeds read again only when a link
renegotiates."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.request
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.utils import floatToGoString

from agent.exporter import MetricsServer, SnapshotCollector
from agent.loop import Snapshot
from collectors.fake_nvml import FakeNVML
from collectors.host import HostCollector
from collectors.network import SPEED_REFRESH_SECONDS, NetworkCollector
from collectors.nvml import NvmlCollector
from collectors.scenarios import Fault, Scenario
from tests.conftest import ManualClock

START = 1_764_000_000.0
ALL_LINKS = 0xFFFFFFFF


def Clock() -> ManualClock:  # noqa: N802 - reads as the class it stands for
    return ManualClock(START)


def _entries(fields: list[Any]) -> list[tuple[Any, ...]]:
    return [(f.fieldId, f.scopeId, f.timestamp, f.valueType, f.nvmlReturn, f.value.ullVal if f.nvmlReturn == 0
             else 0) for f in fields]


@pytest.mark.parametrize("model", ["H100", "V100", "L40S", "RTX4090"])
def test_field_values_are_the_same_from_a_list_a_tuple_and_one_by_one(model: str) -> None:
    """A request answered from a remembered plan (a tuple) answers as the same request as a list
    (planned afresh) and as each field asked alone, for supported, unsupported, unknown and
    out-of-range fields."""
    clock = Clock()
    nvml = FakeNVML(Scenario(model=model, gpus=2), clock=clock, node_name="n")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(1)
    request = (82, 83, 94, 3, 4, 5, 6, 29, 30, 142, 143, 144, 145, 91, (138, ALL_LINKS), (139, ALL_LINKS),
               138, (139, 3), 38, 45, 52, 59, (165, 0), (165, 5), (165, 40), 999, (138, 99))
    for step in range(3):
        clock.now = START + 3600 * step + 7.25
        as_tuple = _entries(nvml.nvmlDeviceGetFieldValues(h, request))
        assert _entries(nvml.nvmlDeviceGetFieldValues(h, request)) == as_tuple  # from the plan
        assert _entries(nvml.nvmlDeviceGetFieldValues(h, list(request))) == as_tuple
        one_by_one = [e for f in request for e in _entries(nvml.nvmlDeviceGetFieldValues(h, [f]))]
        assert one_by_one == as_tuple


def test_nvlink_error_totals_sum_the_links_one_by_one() -> None:
    clock = Clock()
    nvml = FakeNVML(Scenario(model="H100", gpus=8), clock=clock, node_name="errors")
    nvml.nvmlInit()
    seen_errors = False
    for step in (1, 10, 1000, 86_400 * 30):
        clock.now = START + step
        for index in range(8):
            h = nvml.nvmlDeviceGetHandleByIndex(index)
            totals = [f.value.ullVal for f in nvml.nvmlDeviceGetFieldValues(h, [38, 45, 52, 59])]
            by_link = [sum(nvml.nvmlDeviceGetNvLinkErrorCounter(h, link, counter) for link in range(18))
                       for counter in (2, 3, 0, 1)]
            assert totals == by_link
            seen_errors = seen_errors or any(totals)
    assert seen_errors  # some link of some GPU counts errors, so the sums were tested on non-zeros


def test_counters_reused_within_a_tick_match_a_fresh_gpu() -> None:
    """Energy and NVLink throughput read the same integral once per tick; the remembered one
    equals what a GPU that never computed it before says."""
    scenario = Scenario(model="H100", gpus=2, faults=(Fault("powercap", at=30, gpu=1, duration=60),))
    clock = Clock()
    nvml = FakeNVML(scenario, clock=clock, start=START, node_name="c")
    nvml.nvmlInit()
    for t in (0.0, 10.0, 45.0, 45.0, 100.0, 5000.0):
        clock.now = START + t
        fresh = FakeNVML(scenario, clock=clock, start=START, node_name="c")
        fresh.nvmlInit()
        for index in range(2):
            got = [nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(index)),
                   *(f.value.ullVal for f in nvml.nvmlDeviceGetFieldValues(
                       nvml.nvmlDeviceGetHandleByIndex(index), [(138, ALL_LINKS), (139, ALL_LINKS)]))]
            want = [fresh.nvmlDeviceGetTotalEnergyConsumption(fresh.nvmlDeviceGetHandleByIndex(index)),
                    *(f.value.ullVal for f in fresh.nvmlDeviceGetFieldValues(
                        fresh.nvmlDeviceGetHandleByIndex(index), [(138, ALL_LINKS), (139, ALL_LINKS)]))]
            assert got == want


def test_unsupported_fields_are_remembered_without_changing_the_sample() -> None:
    """The collector settles once per return code whether a failed field means "not here"; the
    unsupported set and the samples stay what they were on the first cycle."""
    clock = Clock()
    collector = NvmlCollector(FakeNVML(Scenario(model="H100", gpus=2), clock=clock, node_name="u"), clock=clock,
                              event_thread=False)
    first = [r for r in collector.collect() if type(r).__name__ == "GpuInfo"]
    assert first and all({"retired_pages_sbe", "retired_pages_dbe"} <= set(i.unsupported) for i in first)
    for _ in range(3):
        clock.now += 10
        samples = [r for r in collector.collect() if type(r).__name__ == "Sample" and r.kind == "gpu"]
        assert all(s.values["retired_pages_sbe"] is None and s.values["ecc_corrected_volatile_total"] is not None
                   for s in samples)
    assert collector._unsupported[0] == set(first[0].unsupported)
    collector.close()


def test_number_texts_match_prometheus_client_zeros_included() -> None:
    collector = SnapshotCollector(None, "n")
    values = [0, 0.0, -0.0, False, True, 1, -1, 0.5, 1e7, 123456789, 2**63, math.inf, -math.inf, math.nan,
              1e-9, -1e9, 5e-324]
    for value in values * 2:  # the second pass is answered from the cache
        assert collector._number(value) == floatToGoString(value), value
    assert collector._number(-0.0) == "-0.0" and collector._number(0) == "0.0"


def test_rendered_page_matches_prometheus_client_zeros_included() -> None:
    """render() formats zeros inline and headers once per family: byte for byte what
    prometheus_client's generate_latest writes from the same families."""
    from prometheus_client.exposition import generate_latest

    from agent.exporter import SnapshotRegistry, render_text

    values = [0, 0.0, -0.0, False, True, 1, -1, 0.5, 1e7, 123456789, 2**63, math.inf, -math.inf, 1e-9, 5e-324]

    class Values(SnapshotCollector):
        def families(self) -> Any:
            for counter in (False, True):
                rows = [(self.labels(("i", "node"), str(i), "n"), v) for i, v in enumerate(values)]
                yield ("gpufleet_test_counter" if counter else "gpufleet_test"), counter, "a \\ help\nline", \
                    ("i", "node"), rows

    registry = SnapshotRegistry(Values(None, "n"))
    for _ in range(2):  # the second time from the caches
        assert render_text(registry) == generate_latest(registry)


class _Agent:
    def __init__(self) -> None:
        self.node = {"name": "srv", "agent_version": "0"}
        self.snapshot = Snapshot(ts=1.0)
        self.store = None
        self.spool = type("Spool", (), {"pending": lambda self: [], "dropped": 0})()


def _get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        body: bytes = resp.read()
        return body


def test_metrics_server_reuses_its_threads_and_a_stalled_client_blocks_nobody() -> None:
    server = MetricsServer(_Agent(), "127.0.0.1", 0)
    try:
        def settled() -> None:
            """Until the worker has gone back to waiting (it does so just after the reply is sent;
            a client that asks again sooner gets a second worker, which is fine but not this test)."""
            wait_until(lambda: server.httpd._idle, "the worker to wait again")  # noqa: SLF001

        first = _get(server.server_port)
        assert b"gpufleet_agent_info" in first
        settled()
        before = workers()
        for _ in range(5):
            assert _get(server.server_port) == first
            settled()
        after = workers()
        assert len(before) == 1 and after == before  # one worker served them all
        stalled = socket.create_connection(("127.0.0.1", server.server_port))  # sends nothing
        try:
            wait_until(lambda: not server.httpd._idle, "the worker to take the stalled client")  # noqa: SLF001
            assert _get(server.server_port) == first  # served meanwhile...
            assert len(workers() - after) == 1  # ...by a second worker, the first being held by the stalled client
        finally:
            stalled.close()
    finally:
        server.shutdown()
    wait_until(lambda: not workers() & after, "the workers to end after shutdown")


def workers() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name == "metrics-request"}


def wait_until(condition: Callable[[], object], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.005)


def test_swap_from_meminfo_matches_psutil(tmp_path: Path) -> None:
    sswap = namedtuple("sswap", "total used free percent sin sout")

    class Psutil:
        def swap_memory(self) -> Any:
            return sswap(5, 3, 2, 60.0, 0, 0)

    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nSwapCached:        0 kB\n"
                                      "SwapTotal:       2048 kB\nSwapFree:        512 kB\n")
    meminfo = (tmp_path / "meminfo").read_bytes()
    assert HostCollector(Psutil(), procfs=str(tmp_path), direct=True)._swap(meminfo) == (2048 * 1024, 1536 * 1024)
    assert HostCollector(Psutil(), procfs=str(tmp_path))._swap(None) == (5, 3)  # not read directly: psutil's
    assert HostCollector(Psutil(), procfs=str(tmp_path), direct=True)._swap(b"MemTotal: 1000 kB\n") == (5, 3)
    if Path("/proc/meminfo").exists():
        import psutil

        swap = psutil.swap_memory()
        assert HostCollector(psutil)._swap(Path("/proc/meminfo").read_bytes()) == (swap.total, swap.used)


def test_link_speed_is_read_again_when_the_carrier_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")
    snicstats = namedtuple("snicstats", "isup duplex speed mtu flags")

    class Psutil:
        up = True

        def net_io_counters(self, pernic: bool = False) -> dict[str, Any]:
            return {"eth0": snetio(1, 2, 3, 4, 0, 0, 0, 0)}

        def net_if_stats(self) -> dict[str, Any]:
            return {"eth0": snicstats(self.up, 2, 0, 1500, "")}

    base = tmp_path / "class" / "net" / "eth0"
    base.mkdir(parents=True)
    (base / "type").write_text("1\n")
    (base / "speed").write_text("10000\n")
    (base / "carrier_changes").write_text("2\n")
    ps = Psutil()
    collector = NetworkCollector(ps, sysfs=str(tmp_path), exclude=(), infiniband=False)

    def speed() -> Any:
        return collector.collect()[0].values["speed_bits_per_second"]

    now = [1000.0]
    monkeypatch.setattr("collectors.network.time.monotonic", lambda: now[0])
    assert speed() == 10_000_000_000
    (base / "speed").write_text("25000\n")  # not possible without a carrier change: not read again yet
    assert speed() == 10_000_000_000
    (base / "carrier_changes").write_text("4\n")
    assert speed() == 25_000_000_000
    (base / "speed").write_text("40000\n")
    ps.up = False
    assert speed() == 40_000_000_000  # up/down is a reason too
    (base / "speed").write_text("100000\n")
    now[0] += SPEED_REFRESH_SECONDS
    assert speed() == 100_000_000_000  # and time
