"""NetworkCollector against a fixture sysfs tree and a fake psutil, and against this machine."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from collectors.network import NetworkCollector, parse_ib_rate, parse_ib_state
from collectors.records import Collector, Sample

# Live checks: traffic may flow between reading sysfs and psutil, so byte counters may differ by this.
LIVE_BYTES_TOLERANCE = 10 * 1024 * 1024

SYSFS = Path(__file__).parent / "data" / "sysfs"
IB_PORT = Path("class/infiniband/mlx5_0/ports/1")
# Values in tests/data/sysfs/class/infiniband/mlx5_0/ports/1/counters (4-byte words for the data ones).
RCV_WORDS, XMIT_WORDS = 2874329100918, 2871104588262

snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")
snicstats = namedtuple("snicstats", "isup duplex speed mtu flags")


class FakePsutil:
    """The two psutil calls the collector makes, with settable results."""

    def __init__(self, counters: dict | None = None, stats: dict | None = None) -> None:
        self.counters = (
            counters
            if counters is not None
            else {
                "lo": snetio(5000, 5000, 50, 50, 0, 0, 0, 0),
                "eth0": snetio(7_000_000, 9_000_000, 7000, 9000, 1, 2, 3, 4),
                "eno2": snetio(0, 0, 0, 0, 0, 0, 0, 0),
                "ib0": snetio(100, 200, 1, 2, 0, 0, 0, 0),
            }
        )
        self.stats = (
            stats
            if stats is not None
            else {
                "lo": snicstats(True, 0, 0, 65536, "up,loopback,running"),
                "eth0": snicstats(True, 2, 100000, 9000, "up,broadcast,running,multicast"),
                "eno2": snicstats(False, 0, 0, 1500, "broadcast,multicast"),
                "ib0": snicstats(True, 2, 200000, 4092, "up,broadcast,running,multicast"),
            }
        )

    def net_io_counters(self, pernic: bool = False) -> dict:
        assert pernic
        return dict(self.counters)

    def net_if_stats(self) -> dict:
        return dict(self.stats)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def by_name(records: list) -> dict[str, Sample]:
    return {r.key["interface"]: r for r in records}


def test_follows_the_collector_protocol() -> None:
    assert isinstance(NetworkCollector(FakePsutil(), sysfs=str(SYSFS)), Collector)


def test_interfaces_from_psutil_and_sysfs() -> None:
    clock = Clock()
    rows = by_name(NetworkCollector(FakePsutil(), sysfs=str(SYSFS), clock=clock).collect())
    assert set(rows) == {"eth0", "eno2", "ib0", "mlx5_0/1", "mlx5_1/1"}
    eth0 = rows["eth0"]
    assert eth0.kind == "interface" and eth0.ts == clock.t
    assert eth0.values == {
        "kind": "ethernet",
        "rx_bytes_total": 9_000_000,
        "tx_bytes_total": 7_000_000,
        "rx_packets_total": 9000,
        "tx_packets_total": 7000,
        "rx_errors_total": 1,
        "tx_errors_total": 2,
        "rx_drops_total": 3,
        "tx_drops_total": 4,
        "rx_bytes_per_second": None,
        "tx_bytes_per_second": None,
        "speed_bits_per_second": 100_000_000_000,
        "up": 1,
        "carrier_changes_total": 4,
        "mtu": 9000,
        "symbol_errors_total": None,
        "link_downed_total": None,
    }
    # A down link reports speed -1 in sysfs: unknown, not a number.
    assert rows["eno2"].values["speed_bits_per_second"] is None
    assert rows["eno2"].values["up"] == 0
    assert rows["ib0"].values["kind"] == "infiniband"  # IPoIB netdev, ARPHRD_INFINIBAND


def test_infiniband_port_counts_data_in_four_byte_words() -> None:
    rows = by_name(NetworkCollector(FakePsutil(), sysfs=str(SYSFS)).collect())
    port = rows["mlx5_0/1"].values
    assert port["kind"] == "infiniband"
    assert port["rx_bytes_total"] == RCV_WORDS * 4
    assert port["tx_bytes_total"] == XMIT_WORDS * 4
    assert port["rx_packets_total"] == 9483021137 and port["tx_packets_total"] == 9471180254
    assert port["rx_errors_total"] == 3 and port["tx_drops_total"] == 17
    assert port["symbol_errors_total"] == 0 and port["link_downed_total"] == 1
    assert port["speed_bits_per_second"] == 200_000_000_000
    assert port["up"] == 1
    assert port["mtu"] is None and port["carrier_changes_total"] is None
    assert rows["mlx5_1/1"].values["up"] == 0


def test_infiniband_rates_across_two_collections(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    shutil.copytree(SYSFS, sysfs)
    clock = Clock()
    collector = NetworkCollector(FakePsutil(), sysfs=str(sysfs), clock=clock, include=["mlx5_*"])
    first = by_name(collector.collect())
    assert first["mlx5_0/1"].values["rx_bytes_per_second"] is None

    counters = sysfs / IB_PORT / "counters"
    (counters / "port_rcv_data").write_text(f"{RCV_WORDS + 250_000_000}\n")
    (counters / "port_xmit_data").write_text(f"{XMIT_WORDS + 125_000_000}\n")
    clock.t += 10.0
    second = by_name(collector.collect())["mlx5_0/1"].values
    assert second["rx_bytes_per_second"] == pytest.approx(250_000_000 * 4 / 10.0)  # 100 MB/s
    assert second["tx_bytes_per_second"] == pytest.approx(125_000_000 * 4 / 10.0)

    # A counter reset (driver reload) gives no rate rather than a negative one.
    (counters / "port_rcv_data").write_text("1000\n")
    clock.t += 10.0
    third = by_name(collector.collect())["mlx5_0/1"].values
    assert third["rx_bytes_per_second"] is None
    assert third["tx_bytes_per_second"] == 0.0


def test_ethernet_rates_and_counter_wrap() -> None:
    fake, clock = FakePsutil(), Clock()
    collector = NetworkCollector(fake, sysfs=str(SYSFS), clock=clock, include=["eth0"])
    collector.collect()
    fake.counters["eth0"] = snetio(7_000_000 + 500, 9_000_000 + 2000, 0, 0, 0, 0, 0, 0)
    clock.t += 2.0
    values = collector.collect()[0].values
    assert (values["rx_bytes_per_second"], values["tx_bytes_per_second"]) == (1000.0, 250.0)
    fake.counters["eth0"] = snetio(10, 9_000_000 + 4000, 0, 0, 0, 0, 0, 0)
    clock.t += 2.0
    values = collector.collect()[0].values
    assert values["tx_bytes_per_second"] is None and values["rx_bytes_per_second"] == 1000.0


def test_include_exclude_and_infiniband_switch() -> None:
    fake = FakePsutil()
    with_lo = by_name(NetworkCollector(fake, sysfs=str(SYSFS), exclude=[]).collect())
    assert "lo" in with_lo and with_lo["lo"].values["kind"] == "other"
    no_ib = by_name(NetworkCollector(fake, sysfs=str(SYSFS), infiniband=False).collect())
    assert set(no_ib) == {"eth0", "eno2", "ib0"}
    only = by_name(NetworkCollector(fake, sysfs=str(SYSFS), exclude=["lo", "mlx5_1/*"]).collect())
    assert "mlx5_1/1" not in only and "mlx5_0/1" in only


def test_missing_sysfs_gives_none_not_sentinels(tmp_path: Path) -> None:
    fake = FakePsutil(stats={"eth0": snicstats(True, 0, 0, 0, "")})
    rows = by_name(NetworkCollector(fake, sysfs=str(tmp_path)).collect())
    assert set(rows) == {"eth0", "eno2", "ib0"}  # no IB tree: no IB ports
    eth0 = rows["eth0"].values
    # psutil reports an unknown speed and MTU as 0.
    assert eth0["speed_bits_per_second"] is None and eth0["mtu"] is None
    assert eth0["carrier_changes_total"] is None and eth0["kind"] == "other"
    assert rows["eno2"].values["up"] is None  # no stats for it at all


def test_check(tmp_path: Path) -> None:
    assert NetworkCollector(FakePsutil(), sysfs=str(tmp_path)).check()
    assert not NetworkCollector(FakePsutil(counters={}), sysfs=str(tmp_path)).check()
    assert NetworkCollector(FakePsutil(counters={}), sysfs=str(SYSFS)).check()  # IB only


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("200 Gb/sec (4X HDR)", 200_000_000_000),
        ("2.5 Gb/sec (1X SDR)", 2_500_000_000),
        ("56 Gb/sec (4X FDR)", 56_000_000_000),
        ("400 Gb/sec (4X NDR)", 400_000_000_000),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_ib_rate(text: str | None, bits: int | None) -> None:
    assert parse_ib_rate(text) == bits


def test_parse_ib_state() -> None:
    assert [parse_ib_state(s) for s in ("4: ACTIVE", "1: DOWN", "2: INIT", "", None)] == [1, 0, 0, None, None]


# -- live machine -------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/sys/class/net"), reason="no /sys/class/net on this machine")
def test_live_interfaces_match_sysfs() -> None:
    collector = NetworkCollector(psutil, infiniband=False)
    assert collector.check()
    rows = by_name(collector.collect())
    assert set(rows) == set(os.listdir("/sys/class/net")) - {"lo"}
    for name, row in rows.items():
        stats = Path("/sys/class/net", name, "statistics")
        assert (
            abs(row.values["rx_bytes_total"] - int((stats / "rx_bytes").read_text())) <= LIVE_BYTES_TOLERANCE
        )
        assert row.values["speed_bits_per_second"] is None or row.values["speed_bits_per_second"] > 0
        assert row.values["up"] in (0, 1)


@pytest.mark.skipif(not os.path.isdir("/sys/class/infiniband"), reason="no InfiniBand HCA on this machine")
def test_live_infiniband_ports_match_sysfs() -> None:
    rows = by_name(NetworkCollector(psutil, include=["*/*"]).collect())
    root = Path("/sys/class/infiniband")
    expected = {f"{hca.name}/{port.name}" for hca in root.iterdir() for port in (hca / "ports").iterdir()}
    assert set(rows) == expected
