"""Network telemetry: per-interface counters from psutil and sysfs, and InfiniBand ports from
``<sysfs>/class/infiniband`` (whose data counters count 4-byte words)."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from collectors.procfs import NoWrap, is_real_psutil, read_all, read_int, read_small
from collectors.records import Record, Sample, Value

# ARPHRD_* values from <linux/if_arp.h>, as read from <sysfs>/class/net/<if>/type.
_ARPHRD_KIND = {1: "ethernet", 32: "infiniband"}
# IB port state "4: ACTIVE" is the only state that carries traffic.
_IB_STATE_ACTIVE = 4
_IB_WORD_BYTES = 4
_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*Gb/sec")

# A link's speed only changes when it renegotiates, which takes the carrier down and up again
# (carrier_changes moves): the speed file is read again then, when the link goes up or down, and
# at least this often, rather than on every collection.
SPEED_REFRESH_SECONDS = 60.0

# The interface ioctls psutil.net_if_stats() makes for "up" (IFF_RUNNING in the flags) and the MTU,
# from <linux/sockios.h> and <linux/if.h>; struct ifreq is a 16-byte name and a 24-byte union.
_SIOCGIFFLAGS = 0x8913
_SIOCGIFMTU = 0x8921
_IFF_RUNNING = 0x40
_IFREQ = struct.Struct("16s24x")
_IFREQ_SHORT = struct.Struct("16xh")
_IFREQ_INT = struct.Struct("16xi")
# /proc/net/dev columns after "name:", and the ones psutil.net_io_counters() reports, in its order:
# bytes_sent, bytes_recv, packets_sent, packets_recv, errin, errout, dropin, dropout.
_NETDEV_COLUMNS = 16
_NETDEV_PSUTIL_ORDER = (8, 0, 9, 1, 2, 10, 3, 11)

VALUE_NAMES = (
    "kind",
    "rx_bytes_total",
    "tx_bytes_total",
    "rx_packets_total",
    "tx_packets_total",
    "rx_errors_total",
    "tx_errors_total",
    "rx_drops_total",
    "tx_drops_total",
    "rx_bytes_per_second",
    "tx_bytes_per_second",
    "speed_bits_per_second",
    "up",
    "carrier_changes_total",
    "mtu",
    "symbol_errors_total",
    "link_downed_total",
)


def _read_text(path: str) -> str | None:
    """A small sysfs file's text, read in one call (sysfs attributes fit in a page)."""
    data = read_small(path)  # None when absent, or EINVAL (e.g. speed of a down link)
    return data.decode("ascii", "replace").strip() if data is not None else None


def _as_int(v: Value) -> int | None:
    return v if isinstance(v, int) else None


def counter_rate(prev: int | None, cur: int | None, dt: float | None) -> float | None:
    """Per-second rate of a monotonic counter; None when unknown, on reset/wrap, or dt <= 0."""
    if prev is None or cur is None or dt is None or dt <= 0 or cur < prev:
        return None
    return (cur - prev) / dt


def parse_ib_rate(text: str | None) -> int | None:
    """``"200 Gb/sec (4X HDR)"`` -> 200_000_000_000 bits per second."""
    m = _RATE_RE.match(text or "")
    return round(float(m.group(1)) * 1e9) if m else None


def parse_ib_state(text: str | None) -> int | None:
    """``"4: ACTIVE"`` -> 1, any other state -> 0, unreadable -> None."""
    head = (text or "").split(":", 1)[0].strip()
    return (1 if int(head) == _IB_STATE_ACTIVE else 0) if head.isdigit() else None


class NetworkCollector:
    """Per-interface counters and derived rates, as ``Sample(kind="interface")`` rows.

    ``include``/``exclude`` are shell patterns on the interface name (``"mlx5_0/1"`` for IB ports);
    ``include=None`` means everything not excluded.
    """

    name = "network"

    def __init__(
        self,
        psutil_module: Any = None,
        sysfs: str = "/sys",
        clock: Callable[[], float] = time.time,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = ("lo",),
        infiniband: bool = True,
        procfs: str = "/proc",
        direct: bool | None = None,
    ) -> None:
        """``direct``: read <procfs>/net/dev and the interface flags and MTU (ioctls on one socket
        kept open) straight rather than through psutil, falling back to psutil when the file is
        missing or unparsable. None (the default) means yes when ``psutil_module`` is psutil itself;
        an injected stand-in stays the source of everything psutil would answer."""
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._direct = is_real_psutil(psutil_module) if direct is None else direct
        self._netdev_path = os.path.join(procfs, "net", "dev")
        self._nowrap = NoWrap()
        self._socket: socket.socket | None = None
        # interface -> (struct ifreq naming it, <sysfs>/class/net/<if>/ carrier_changes, speed, type)
        self._paths: dict[str, tuple[bytes, str, str, str, bool]] = {}
        self._sysfs = sysfs
        self._clock = clock
        self._include = list(include) if include is not None else None
        self._exclude = list(exclude)
        self._infiniband = infiniband
        self._prev: dict[str, tuple[float, int | None, int | None]] = {}
        self._kinds: dict[str, str] = {}  # interface -> link type, which does not change while it exists
        self._wanted_names: dict[str, bool] = {}
        # interface -> ((carrier changes, up), when read, link speed in Mb/s): see SPEED_REFRESH_SECONDS.
        self._speeds: dict[str, tuple[tuple[int | None, bool | None], float, int | None]] = {}

    def _ib_root(self) -> str:
        return os.path.join(self._sysfs, "class", "infiniband")

    def check(self) -> bool:
        try:
            if self._psutil.net_io_counters(pernic=True):
                return True
        except (OSError, RuntimeError):
            pass
        return self._infiniband and os.path.isdir(self._ib_root())

    def _wanted(self, name: str) -> bool:
        """Whether ``name`` passes the include/exclude patterns (remembered: the patterns are fixed)."""
        wanted = self._wanted_names.get(name)
        if wanted is None:
            wanted = not any(fnmatch.fnmatchcase(name, p) for p in self._exclude) and (
                self._include is None or any(fnmatch.fnmatchcase(name, p) for p in self._include))
            if len(self._wanted_names) > 4096:  # interfaces that come and go (containers' veths)
                self._wanted_names.clear()
            self._wanted_names[name] = wanted
        return wanted

    def collect(self) -> list[Record]:
        now = self._clock()
        rows = list(self._netdev_rows()) + (list(self._ib_rows()) if self._infiniband else [])
        out: list[Record] = []
        seen = set()
        for name, values in rows:  # only wanted ones: the rest are not even read
            seen.add(name)
            rx, tx = _as_int(values.get("rx_bytes_total")), _as_int(values.get("tx_bytes_total"))
            prev_ts, prev_rx, prev_tx = self._prev.get(name, (None, None, None))
            dt = now - prev_ts if prev_ts is not None else None
            values["rx_bytes_per_second"] = counter_rate(prev_rx, rx, dt)
            values["tx_bytes_per_second"] = counter_rate(prev_tx, tx, dt)
            self._prev[name] = (now, rx, tx)
            out.append(
                Sample(
                    kind="interface",
                    ts=now,
                    key={"interface": name},
                    values={k: values.get(k) for k in VALUE_NAMES},
                )
            )
        for gone in set(self._prev) - seen:
            del self._prev[gone]
        return out

    def _netdev_counters(self) -> tuple[dict[str, tuple[int, ...]], set[str]]:
        """(wanted interface -> counters in psutil.net_io_counters() order, every interface name).

        Direct: <procfs>/net/dev, converting only the wanted interfaces' eight columns, with
        psutil's nowrap corrections (see NoWrap); else, or when that file is missing or not in the
        format psutil reads, psutil.net_io_counters()."""
        if self._direct:
            parsed = self._parse_netdev(read_all(self._netdev_path))
            if parsed is not None:
                return self._nowrap.adjust(parsed[0]), parsed[1]
        counters = self._psutil.net_io_counters(pernic=True) or {}
        return {
            n: (c.bytes_sent, c.bytes_recv, c.packets_sent, c.packets_recv, c.errin, c.errout, c.dropin,
                c.dropout)
            for n, c in counters.items() if self._wanted(n)
        }, set(counters)

    def _psutil_stats(self) -> dict[str, Any]:
        try:
            return self._psutil.net_if_stats() or {}
        except OSError:
            return {}

    def _parse_netdev(self, data: bytes | None) -> tuple[dict[str, tuple[int, ...]], set[str]] | None:
        if data is None:
            return None
        rows: dict[str, tuple[int, ...]] = {}
        names: set[str] = set()
        for line in data.split(b"\n")[2:]:  # two header lines
            if not line:
                continue
            colon = line.rfind(b":")
            if colon <= 0:
                return None
            name = os.fsdecode(line[:colon].strip())  # as psutil decodes it
            names.add(name)
            if not self._wanted(name):
                continue
            fields = line[colon + 1:].split()
            if len(fields) != _NETDEV_COLUMNS:
                return None
            try:
                rows[name] = tuple(int(fields[i]) for i in _NETDEV_PSUTIL_ORDER)
            except ValueError:
                return None
        return rows, names

    def _if_stats(self, name: str, ifreq: bytes) -> tuple[bool, int] | None:
        """(IFF_RUNNING set, MTU) from the ioctls psutil.net_if_stats() makes, on one socket kept
        open rather than one per call; None when the interface is gone (ENODEV, as psutil) or the
        ioctls fail."""
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            fd = self._socket.fileno()
            flags = _IFREQ_SHORT.unpack_from(fcntl.ioctl(fd, _SIOCGIFFLAGS, ifreq))[0]
            mtu = _IFREQ_INT.unpack_from(fcntl.ioctl(fd, _SIOCGIFMTU, ifreq))[0]
        except OSError as exc:
            if exc.errno not in (errno.ENODEV, errno.ENXIO):
                self._close_socket()
            return None
        return bool(flags & _IFF_RUNNING), mtu

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _netdev_rows(self) -> Iterable[tuple[str, dict[str, Value]]]:
        counters, names = self._netdev_counters()
        # psutil.net_if_stats() for "up" and the MTU unless direct, and for the speed of a link
        # without a sysfs speed file (read on first need).
        stats = None if self._direct else self._psutil_stats()
        speed_stats = stats
        for gone in self._kinds.keys() - names:
            del self._kinds[gone]
        for gone in self._speeds.keys() - names:
            del self._speeds[gone]
        for gone in self._paths.keys() - names:
            del self._paths[gone]
        now = time.monotonic()
        for name in sorted(counters):  # only wanted ones: the rest are not even read
            c = counters[name]
            paths = self._paths.get(name)
            if paths is None:
                base = os.path.join(self._sysfs, "class", "net", name)
                paths = self._paths[name] = (
                    _IFREQ.pack(os.fsencode(name)[:15]),
                    os.path.join(base, "carrier_changes"),
                    os.path.join(base, "speed"),
                    os.path.join(base, "type"),
                    # A bond's speed is the sum of its usable links: it changes while the bond stays up.
                    not os.path.isdir(os.path.join(base, "bonding")),
                )
            ifreq, carrier_path, speed_path, type_path, speed_cacheable = paths
            carrier_changes = read_int(carrier_path)
            if stats is None:
                isup_mtu = self._if_stats(name, ifreq)
                isup, mtu = isup_mtu if isup_mtu is not None else (None, None)
            else:
                st = stats.get(name)
                isup, mtu = (st.isup, st.mtu) if st is not None else (None, None)
            known = self._speeds.get(name)
            if known is not None and known[0] == (carrier_changes, isup) and carrier_changes is not None \
                    and speed_cacheable and known[1] <= now < known[1] + SPEED_REFRESH_SECONDS:
                speed_mbps = known[2]
            else:
                speed_mbps = read_int(speed_path)
                if speed_mbps is None and not os.path.exists(speed_path):
                    if speed_stats is None:
                        speed_stats = self._psutil_stats()
                    st = speed_stats.get(name)
                    if st is not None:
                        speed_mbps = st.speed  # psutil reports unknown as 0 (ethtool's answer)
                self._speeds[name] = ((carrier_changes, isup), now, speed_mbps)
            kind = self._kinds.get(name)
            if kind is None:
                kind = self._kinds[name] = _ARPHRD_KIND.get(read_int(type_path) or -1, "other")
            yield (
                name,
                {
                    "kind": kind,
                    "rx_bytes_total": c[1],
                    "tx_bytes_total": c[0],
                    "rx_packets_total": c[3],
                    "tx_packets_total": c[2],
                    "rx_errors_total": c[4],
                    "tx_errors_total": c[5],
                    "rx_drops_total": c[6],
                    "tx_drops_total": c[7],
                    "speed_bits_per_second": speed_mbps * 1_000_000
                    if speed_mbps and speed_mbps > 0
                    else None,
                    "up": (1 if isup else 0) if isup is not None else None,
                    "carrier_changes_total": carrier_changes,
                    "mtu": mtu if mtu is not None and mtu > 0 else None,
                },
            )

    def _ib_rows(self) -> Iterable[tuple[str, dict[str, Value]]]:
        root = self._ib_root()
        try:
            hcas = sorted(os.listdir(root))
        except OSError:
            return
        for hca in hcas:
            ports_dir = os.path.join(root, hca, "ports")
            try:
                ports = sorted(os.listdir(ports_dir), key=lambda p: (len(p), p))
            except OSError:
                continue
            for port in ports:
                if self._wanted(f"{hca}/{port}"):
                    yield f"{hca}/{port}", self._ib_port(os.path.join(ports_dir, port))

    @staticmethod
    def _ib_port(base: str) -> dict[str, Value]:
        def counter(name: str) -> int | None:
            return read_int(os.path.join(base, "counters", name))

        rcv_words, xmit_words = counter("port_rcv_data"), counter("port_xmit_data")
        return {
            "kind": "infiniband",
            "rx_bytes_total": rcv_words * _IB_WORD_BYTES if rcv_words is not None else None,
            "tx_bytes_total": xmit_words * _IB_WORD_BYTES if xmit_words is not None else None,
            "rx_packets_total": counter("port_rcv_packets"),
            "tx_packets_total": counter("port_xmit_packets"),
            "rx_errors_total": counter("port_rcv_errors"),
            "tx_drops_total": counter("port_xmit_discards"),
            "symbol_errors_total": counter("symbol_error"),
            "link_downed_total": counter("link_downed"),
            "speed_bits_per_second": parse_ib_rate(_read_text(os.path.join(base, "rate"))),
            "up": parse_ib_state(_read_text(os.path.join(base, "state"))),
        }

    def close(self) -> None:
        self._prev.clear()
        self._speeds.clear()
        self._close_socket()
