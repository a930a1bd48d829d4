"""The mapping table of ``gpufleet import prometheus`` and the importer's pure parts: no server."""

from __future__ import annotations

import math

import pytest

from collectors import dcgm
from db.models import SAMPLE_TABLES
from gpufleet.cli import UserError
from gpufleet.promimport import MAX_STEPS, chunk_bounds, parse_step
from gpufleet.promsource import redact
from gpufleet.timeargs import parse_time

MIB = 2**20


def test_every_mapped_column_exists_in_its_table() -> None:
    for kind, columns in dcgm.COLUMNS.items():
        assert set(columns) <= {c.name for c in SAMPLE_TABLES[kind].columns}, kind
    assert all(f.column.startswith("_") or f.column in dcgm.COLUMNS[f.kind] for f in dcgm.FIELDS)


@pytest.mark.parametrize(("metric", "raw", "expected"), [
    ("DCGM_FI_DEV_GPU_UTIL", "37", 0.37),  # % -> ratio
    ("DCGM_FI_DEV_FB_USED", "1024", 1024 * MIB),  # MiB -> bytes
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "1500", 1.5),  # mJ -> J
    ("DCGM_FI_DEV_SM_CLOCK", "1980", 1.98e9),  # MHz -> Hz
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "2", 2000.0),  # KB/s -> B/s
    ("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "5", 5000.0),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "1", True),
    ("DCGM_FI_PROF_SM_ACTIVE", "0.25", 0.25),
    ("node_network_speed_bytes", "1.25e+09", 1e10),  # bytes/s -> bits/s
    ("node_network_protocol_type", "32", "infiniband"),
    ("node_network_protocol_type", "1", "ethernet"),
    ("node_network_protocol_type", "772", "other"),
    ("DCGM_FI_DEV_GPU_TEMP", "NaN", None),  # unknown, never a number
    ("DCGM_FI_DEV_POWER_USAGE", "-Inf", None),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "+Inf", None),
    ("DCGM_FI_DEV_FB_USED", "NaN", None),
    ("node_disk_io_now", "+Inf", None),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "1e+21", 10**21),  # Prometheus' exponent form, as an int
])
def test_convert_to_base_units(metric: str, raw: str, expected: object) -> None:
    (got,) = dcgm.convert(dcgm.BY_METRIC[metric], [float(raw)])
    assert got == expected and type(got) is type(expected)
    column = dcgm.convert(dcgm.BY_METRIC[metric], [0.0, float(raw), 1.0])  # one unknown does not blank the rest
    assert column[1] == expected and None not in (column[0], column[2])


def test_convert_takes_both_infinities_and_huge_values_in_one_column() -> None:
    power = dcgm.BY_METRIC["DCGM_FI_DEV_POWER_USAGE"]  # a sum of these is NaN or overflows: no crash
    assert dcgm.convert(power, [math.inf, -math.inf, 250.0]) == [None, None, 250.0]
    assert dcgm.convert(power, [1e308, 1e308]) == [1e308, 1e308]
    assert dcgm.convert(dcgm.BY_METRIC["DCGM_FI_DEV_FB_USED"], [1.0, math.inf]) == [MIB, None]


def test_counter_rates_skip_resets_gaps_and_cap_utilization() -> None:
    rx, io = dcgm.BY_METRIC["node_network_receive_bytes_total"], dcgm.BY_METRIC["node_disk_io_time_seconds_total"]
    assert dcgm.counter_rates(rx, [1000, 4000, None, 5000, 100, 400], 15) == [None, 200, None, None, None, 20]
    assert dcgm.counter_rates(io, [10.0, 10.5, 12.5], 1) == [None, 0.5, 1.0]


@pytest.mark.parametrize(("instance", "host"), [
    ("gpu-01:9100", "gpu-01"), ("10.0.0.5:9400", "10.0.0.5"), ("[fe80::1]:9100", "fe80::1"), ("fe80::1", "fe80::1"),
    ("gpu-01", "gpu-01"),
])
def test_instance_host_drops_the_port(instance: str, host: str) -> None:
    assert dcgm.instance_host(instance) == host


def test_node_name_rule() -> None:
    unames = {"10.0.0.5:9100": "gpu-01"}
    assert dcgm.node_name({"Hostname": "gpu-07", "instance": "10.0.0.9:9400"}, unames) == "gpu-07"
    assert dcgm.node_name({"instance": "10.0.0.5:9100"}, unames) == "gpu-01"  # node_uname_info's nodename
    assert dcgm.node_name({"instance": "10.0.0.6:9100"}, unames) == "10.0.0.6"
    assert dcgm.node_name({}, unames) is None


def test_thing_keys_and_what_is_skipped() -> None:
    gpu = {"gpu": "3", "UUID": "GPU-x"}
    assert dcgm.thing_key("gpu", gpu) == {"gpu_index": 3, "gpu_uuid": "GPU-x"}
    assert dcgm.thing_key("gpu", {**gpu, "GPU_I_ID": "1"}) is None  # a MIG instance, not the GPU
    assert dcgm.thing_key("gpu", {"gpu": "3"}) is None
    assert dcgm.thing_key("interface", {"device": "lo"}) is None
    assert dcgm.thing_key("interface", {"device": "ib0"}) == {"interface": "ib0"}
    assert dcgm.thing_key("disk", {"device": "loop3"}) is None
    assert dcgm.thing_key("filesystem", {"mountpoint": "/data"}) == {"path": "/data"}
    assert dcgm.thing_key("host", {}) == {}


def test_derived_columns() -> None:
    gpu = {"memory_used_bytes": [2 * MIB, None], "memory_free_bytes": [5 * MIB, 5 * MIB], "_reserved": [MIB, MIB]}
    dcgm.derive("gpu", gpu, {}, 2)
    assert gpu == {"memory_used_bytes": [2 * MIB, None], "memory_free_bytes": [5 * MIB, 5 * MIB],
                   "memory_total_bytes": [8 * MIB, None]}
    fs = {"size_bytes": [100, 100], "free_bytes": [30, 40], "files_total": [0, 0], "files_free": [0, 0]}
    dcgm.derive("filesystem", fs, {"device": "/dev/sda1", "fstype": "ext4"}, 2)
    assert fs == {"size_bytes": [100, 100], "free_bytes": [30, 40], "used_bytes": [70, 60],
                  "files_total": [None, None], "files_free": [None, None], "device": ["/dev/sda1"] * 2,
                  "fstype": ["ext4"] * 2}


def test_xid_gauge_changes() -> None:
    codes = dcgm.convert(dcgm.XID_FIELD, [79.0, 79, 0, 0, 48, math.nan, 13, 13, 31])
    changes = [(i, info.code, info.fatal) for i, info in dcgm.xid_changes(codes)]
    # The first 79 has no predecessor: when it happened is unknown. 79 -> 79 and -> 0 are no events;
    # a gap (NaN) hides the change to 13.
    assert changes == [(4, 48, True), (8, 31, False)]


def test_chunks_cover_the_grid_once_on_a_global_grid() -> None:
    step = 15
    first, last = 1_700_000_010, 1_700_000_010 + 25_000 * step
    chunks = list(chunk_bounds(first, last, step, MAX_STEPS))
    points = [t for a, b in chunks for t in range(a, b + step, step)]
    assert points == list(range(first, last + step, step))
    assert all((b - a) // step + 1 <= MAX_STEPS for a, b in chunks)
    assert all(a % (MAX_STEPS * step) == 0 for a, _ in chunks[1:])  # boundaries do not depend on the start
    later = list(chunk_bounds(chunks[1][0] + 5 * step, last, step, MAX_STEPS))
    assert later[0][1] == chunks[1][1] and later[1:] == chunks[2:]


def test_times_steps_and_urls() -> None:
    now = 1_800_000_000.0
    assert parse_time("now", now, "--end") == now
    assert parse_time("-6h", now, "--start") == now - 6 * 3600
    assert parse_time("1700000000.5", now, "--start") == 1_700_000_000.5
    assert parse_time("2026-11-01T00:00:00Z", now, "--start") == parse_time("2026-11-01T00:00:00", now, "--start")
    assert parse_time("2026-11-01T01:00:00+01:00", now, "--start") == 1_793_491_200.0
    for bad in ("yesterday", "-6x", "nan", "-1"):
        with pytest.raises(UserError):
            parse_time(bad, now, "--start")
    assert parse_step("15s") == parse_step("15") == 15 and parse_step("1m") == 60
    for bad in ("0", "0.5", "1.5s", "fast"):
        with pytest.raises(UserError):
            parse_step(bad)
    assert redact("http://admin:secret@prom:9090/prefix") == "http://prom:9090/prefix"
