"""What every benchmark report carries: the machine, the versions, the command, and its section of
``docs/PERFORMANCE.md`` (replaced in place between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import socket
import sys
import tempfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PERFORMANCE.md"


def free_port() -> int:
    """A TCP port free on the loopback interface right now, for a server the benchmark starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def fs_type(path: str | os.PathLike[str]) -> str:
    """The filesystem type holding ``path`` (longest mount-point prefix in /proc/mounts)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def scratch_base(requested: str | None) -> str:
    """Local disk for the SQLite files: the temp dir unless it is a RAM filesystem."""
    if requested:
        return requested
    tmp = tempfile.gettempdir()
    if fs_type(tmp) not in ("tmpfs", "ramfs"):
        return tmp
    alt = os.path.join(os.path.expanduser("~"), ".cache", "gpufleet-bench")
    os.makedirs(alt, exist_ok=True)
    return alt


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    mem = memory_gib()
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}"
            + (f", {mem:.0f} GiB RAM" if mem else "") + f", Linux {platform.release()}")


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([".venv/bin/python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def header(versions: Iterable[tuple[str, str]]) -> list[str]:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vers = ", ".join(f"{k} {v}" for k, v in versions)
    return [
        f"- command: `{command_line()}`",
        f"- date: {now}",
        f"- machine: {machine_line()}",
        f"- versions: Python {platform.python_version()}, gpufleet {package_version('gpufleet')}, {vers}",
    ]


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def write_section(name: str, lines: Sequence[str], doc: Path = DOC, kind: str = "bench",
                  title: str = "# Performance") -> None:
    """Replace the section ``name`` of the performance doc (appended if it is not there yet); ``doc``,
    ``kind`` (the marker prefix, ``<!-- KIND:NAME -->``) and ``title`` (of a new doc) serve other docs,
    e.g. ``docs/VALIDATION.md`` with ``kind="validation"``."""
    start, end = f"<!-- {kind}:{name} -->", f"<!-- /{kind}:{name} -->"
    body = "\n".join([start, *lines, end])
    text = doc.read_text() if doc.exists() else title + "\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"wrote section {name!r} of {os.path.relpath(doc, ROOT)}")



def write_validation(name: str, lines: Sequence[str]) -> None:
    """Replace the section ``name`` of docs/VALIDATION.md (the planner's results on public traces)."""
    write_section(name, lines, doc=ROOT / "docs" / "VALIDATION.md", kind="validation", title="# Validation")

def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
