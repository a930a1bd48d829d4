"""Cheap reads of procfs and sysfs files for the host, network and storage collectors (issue #2).

The collectors used to go through psutil for /proc/stat, /proc/meminfo, /proc/net/dev and
/proc/diskstats. psutil parses every field of every line, wraps each row in a named tuple and runs
its ``nowrap`` bookkeeping on every call; like node_exporter, the collectors now read each file once
per collection and parse only the fields they report. psutil stays the fallback when a file is
missing or not in a format the parsers know, and :class:`NoWrap` keeps psutil's counter semantics.
"""

from __future__ import annotations

import os
from operator import lt
from typing import Any

# Enough for any single-page sysfs attribute and for the first line of /proc/stat.
SMALL_READ = 4096
_CHUNK = 65536


def is_real_psutil(module: Any) -> bool:
    """Whether ``module`` is psutil itself rather than a stand-in (tests inject fakes).

    Direct reads only replace psutil when psutil would have read the same files: an injected
    stand-in describes a made-up machine, so everything it answers keeps coming from it."""
    return getattr(module, "__name__", None) == "psutil"


def read_small(path: str | bytes) -> bytes | None:
    """The first :data:`SMALL_READ` bytes of a file in one read(2), or None if it cannot be read.

    ``os.open``/``os.read`` skip the io objects ``open()`` builds, which cost more than reading a
    sysfs attribute itself."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, SMALL_READ)
    except OSError:  # EINVAL and friends: e.g. the speed of a down link
        return None
    finally:
        os.close(fd)


def read_all(path: str | bytes) -> bytes | None:
    """A whole procfs file (read until EOF: seq_file may return it in pieces), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # Until EOF: a seq_file may hand the file over in pieces smaller than asked for, so a
        # short read does not mean the end (one more read(2), of nothing, says it).
        parts = []
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_int(path: str | bytes) -> int | None:
    """A sysfs attribute holding one integer, or None when absent, unreadable or not a number."""
    data = read_small(path)
    if data is None:
        return None
    try:
        return int(data)  # int() ignores the trailing newline
    except ValueError:
        return None


def meminfo_bytes(text: bytes, key: bytes) -> int | None:
    """The value of ``key`` (``b"SwapFree:"``) in /proc/meminfo text, in bytes (the file says kB),
    or None when the line is missing or unparsable."""
    if text.startswith(key):
        start = 0
    else:
        start = text.find(b"\n" + key)
        if start < 0:
            return None
        start += 1
    end = text.find(b"\n", start)
    fields = text[start + len(key):end if end >= 0 else len(text)].split()
    try:
        return int(fields[0]) * 1024
    except (IndexError, ValueError):
        return None


class NoWrap:
    """psutil's ``nowrap`` (``psutil._common.wrap_numbers``), per collector and cheap.

    When a counter goes down between two collections (a 32-bit wrap, or a reset: an interface
    re-created, a driver reloaded), psutil adds the value it had before the drop to that counter
    from then on, so the counters it reports never decrease. The collectors keep reporting exactly
    that, so their ``*_total`` values and rates are what they were with psutil:

    * /proc/net/dev counters are 64-bit on 64-bit kernels, so there a drop is a reset;
    * /proc/diskstats prints read/write/busy milliseconds as 32-bit numbers, which really do wrap
      (after 2**32 ms, about 50 days, of summed I/O time; sooner on a busy, deeply queued disk).

    psutil rebuilds and scans every row on every call; here a row whose counters all moved forward
    (nearly always) costs one C-level comparison. Unlike psutil's process-wide cache, the state is
    per instance, so two collectors (or the tests) calling psutil cannot disturb each other.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, ...]] = {}  # the raw values of the previous call
        self._add: dict[str, list[int]] = {}  # per row: what to add to each counter from now on

    def adjust(self, rows: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """``rows`` (raw values) with psutil's corrections; ``rows`` itself when there are none."""
        last, self._last = self._last, rows
        add = self._add
        if add:
            for gone in add.keys() - rows.keys():  # as psutil: a row that disappears starts afresh
                del add[gone]
        out = rows
        for key, cur in rows.items():
            prev = last.get(key)
            if prev is None:
                continue  # new row: taken as it is
            extra = add.get(key)
            if extra is None:
                if not any(map(lt, cur, prev)):
                    continue
                extra = add[key] = [0] * len(cur)
            for i, (c, p) in enumerate(zip(cur, prev, strict=True)):
                if c < p:
                    extra[i] += p
            if out is rows:
                out = dict(rows)
            out[key] = tuple(c + e for c, e in zip(cur, extra, strict=True))
        return out

