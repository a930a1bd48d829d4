"""Job-log parsers: Slurm ``sacct --parsable2``, Helios/Acme job logs, Alibaba openb pod lists, plain CSV.

Each parser turns text lines into rows shaped like ``db.models.Job`` plus the list of bad lines with
their line numbers; nothing here touches the store, so a file is judged whole before any row is
written (``planner.jobs.import_jobs``).

Job states map onto DESIGN.md's failure categories (``STATE_CATEGORY``):

| state (Slurm name; openb phase) | category | why |
|---|---|---|
| COMPLETED (Succeeded) | NULL | not a failure |
| FAILED (Failed), OUT_OF_MEMORY | user/app | the job's own exit code or its memory request |
| NODE_FAIL, BOOT_FAIL | host | the node under the job died or never came up |
| TIMEOUT, DEADLINE | timeout | hit its time limit |
| CANCELLED, PREEMPTED, REVOKED | cancelled | ended by a person or the scheduler, not by a fault |
| RUNNING, PENDING, REQUEUED, SUSPENDED, RESIZING (Running, Pending) | NULL | not finished |

Logs carry no finer cause; a plain CSV can set ``category`` per row (e.g. ``gpu-hardware`` for a
job your scheduler killed after an XID 79).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("user/app", "framework", "gpu-hardware", "interconnect", "host", "maintenance", "cancelled", "timeout")

STATE_CATEGORY: dict[str, str | None] = {
    "COMPLETED": None,
    "FAILED": "user/app",
    "OUT_OF_MEMORY": "user/app",
    "NODE_FAIL": "host",
    "BOOT_FAIL": "host",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "CANCELLED": "cancelled",
    "PREEMPTED": "cancelled",
    "REVOKED": "cancelled",
    "RUNNING": None,
    "PENDING": None,
    "REQUEUED": None,
    "SUSPENDED": None,
    "RESIZING": None,
}
ACTIVE_STATES = frozenset({"RUNNING", "PENDING", "REQUEUED", "SUSPENDED", "RESIZING"})
OPENB_PHASES = {"Succeeded": "COMPLETED", "Failed": "FAILED", "Running": "RUNNING", "Pending": "PENDING"}
FORMATS = ("sacct", "helios", "openb", "csv")
_UNKNOWN_TIMES = {"", "unknown", "none", "nan", "null", "n/a"}


class RowError(ValueError):
    """One bad field of one row; the parser adds the line number."""


@dataclass
class ParseResult:
    """Rows ready for the ``jobs`` table, bad lines as ``(line number, reason)``, and rows skipped on
    purpose (``sacct`` job steps, which are parts of a job rather than jobs)."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0


def parse_time(value: str | None, name: str, origin: float = 0.0) -> float | None:
    """Epoch seconds from epoch numbers (plus ``origin``) or ISO 8601 text (naive means UTC);
    empty, ``Unknown`` and ``None`` are unknown."""
    text = (value or "").strip()
    if text.lower() in _UNKNOWN_TIMES:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise RowError(f"{name} {text!r} is not a time")
        return number + origin
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{name} {text!r} is not a time (epoch seconds or ISO 8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def parse_number(value: str | None, name: str, *, required: bool = False) -> float | None:
    """A finite, non-negative number; empty is unknown unless ``required``."""
    text = (value or "").strip()
    if not text:
        if required:
            raise RowError(f"{name} is empty")
        return None
    try:
        number = float(text)
    except ValueError:
        raise RowError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise RowError(f"{name} {text!r} is not a non-negative number")
    return number


def parse_state(value: str | None) -> str:
    """The Slurm state name: ``CANCELLED by 1000`` is ``CANCELLED``; case-insensitive."""
    text = (value or "").strip().split(" ")[0].upper()
    if text not in STATE_CATEGORY:
        raise RowError(f"unknown state {value!r}")
    return text


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _text(value: str | None) -> str | None:
    text = (value or "").strip()
    return text or None


def _job(source: str, cluster: str, external_id: str, state: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": source, "cluster": cluster, "external_id": external_id, "user": None, "account": None,
        "partition": None, "state": state, "category": STATE_CATEGORY[state], "submit_ts": None, "start_ts": None,
        "end_ts": None, "gpus": None, "gpu_model": None, "nodes": None, "node_list": None, "exit_code": None,
        "details": None,
    }
    row.update(fields)
    return row


def _id_and_times(r: dict[str, str], origin: float) -> tuple[str, float | None, float | None]:
    """``job_id``, ``start_time`` and ``end_time`` of a Helios or plain CSV row (the same column names)."""
    job_id = r["job_id"].strip()
    if not job_id:
        raise RowError("job_id is empty")
    start = parse_time(r.get("start_time"), "start_time", origin)
    return job_id, start, parse_time(r.get("end_time"), "end_time", origin)


def _table(lines: Iterable[str], required: Iterable[str], row_fn: Callable[[dict[str, str]], dict[str, Any] | None],
           *, delimiter: str = ",") -> ParseResult:
    """Run ``row_fn`` over each data row of a headed table, collecting bad lines with their numbers.
    ``row_fn`` returns ``None`` for rows skipped on purpose."""
    out = ParseResult()
    # sacct --parsable2 never quotes, so a quote character in a field is data
    reader = (csv.reader(_strip_bom(lines), delimiter=delimiter, quoting=csv.QUOTE_NONE) if delimiter == "|"
              else csv.reader(_strip_bom(lines), delimiter=delimiter))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        out.errors.append((1, "the file is empty (no header line)"))
        return out
    except csv.Error as exc:
        out.errors.append((1, f"unreadable header: {exc}"))
        return out
    missing = [name for name in required if name not in header]
    if missing:
        out.errors.append((1, f"missing column(s) {', '.join(missing)} in header {delimiter.join(header)[:120]!r}"))
        return out
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            out.errors.append((reader.line_num, f"unreadable row: {exc}"))
            continue
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            out.errors.append((reader.line_num, f"{len(cells)} fields, the header has {len(header)}"))
            continue
        try:
            job = row_fn(dict(zip(header, cells, strict=True)))
        except RowError as exc:
            out.errors.append((reader.line_num, str(exc)))
            continue
        if job is None:
            out.skipped += 1
        else:
            out.jobs.append(job)
    return out


def _strip_bom(lines: Iterable[str]) -> Iterator[str]:
    first = True
    for line in lines:
        yield line.lstrip("\ufeff") if first else line
        first = False


# -- Slurm sacct --------------------------------------------------------------------------------

SACCT_REQUIRED = ("JobID", "State", "Submit")
_TRES_GPU = re.compile(r"^gres/gpu(?::([^=]+))?=(\d+)")
_TRES_NODE = re.compile(r"^node=(\d+)$")


def parse_tres(tres: str) -> tuple[int | None, str | None, int | None]:
    """(GPUs, GPU model, nodes) from a TRES string such as
    ``billing=16,cpu=16,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1``."""
    untyped: int | None = None
    typed: dict[str, int] = {}
    nodes: int | None = None
    for part in (p.strip() for p in tres.split(",")):
        if m := _TRES_GPU.match(part):
            if m.group(1):
                typed[m.group(1)] = int(m.group(2))
            else:
                untyped = int(m.group(2))
        elif m := _TRES_NODE.match(part):
            nodes = int(m.group(1))
    gpus = untyped if untyped is not None else (sum(typed.values()) if typed else None)
    model = next(iter(typed)) if len(typed) == 1 else None
    if gpus is None and tres.strip():
        gpus = 0  # a TRES list without any GPU: a CPU-only job
    return gpus, model, nodes


def count_hosts(node_list: str) -> int | None:
    """Hosts in a Slurm hostlist (``gpu[01-03,07],cpu1`` is 5); ``None assigned`` is unknown."""
    text = node_list.strip()
    if not text or text.lower().startswith("none"):
        return None
    total = 0
    for m in re.finditer(r"[^,\[]+(?:\[([^\]]*)\])?", text):
        ranges = m.group(1)
        if ranges is None:
            total += 1
            continue
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            try:
                total += int(hi) - int(lo) + 1 if hi else 1
            except ValueError:
                raise RowError(f"NodeList {node_list!r} is not a Slurm hostlist") from None
    return total


def parse_sacct(lines: Iterable[str], *, cluster: str = "", origin: float = 0.0) -> ParseResult:
    """``sacct --parsable2`` output (``|``-separated, with header). Job steps (``123.batch``,
    ``123.0``) are skipped: their job is on its own line."""

    def row(r: dict[str, str]) -> dict[str, Any] | None:
        job_id = r["JobID"].strip()
        if not job_id:
            raise RowError("JobID is empty")
        if "." in job_id:
            return None
        tres = r.get("AllocTRES", "").strip() or r.get("ReqTRES", "").strip()
        gpus, model, nodes = parse_tres(tres)
        node_list = _text(r.get("NodeList"))
        if nodes is None and node_list:
            nodes = count_hosts(node_list)
        if node_list and node_list.lower().startswith("none"):
            node_list = None
        return _job("sacct", _text(r.get("Cluster")) or cluster, job_id, parse_state(r["State"]),
                    user=_text(r.get("User")), account=_text(r.get("Account")), partition=_text(r.get("Partition")),
                    submit_ts=parse_time(r["Submit"], "Submit", origin),
                    start_ts=parse_time(r.get("Start"), "Start", origin),
                    end_ts=parse_time(r.get("End"), "End", origin), gpus=gpus, gpu_model=model, nodes=nodes,
                    node_list=node_list, exit_code=_text(r.get("ExitCode")),
                    details={k: r[k] for k in ("ReqTRES", "AllocTRES") if r.get(k)} or None)

    return _table(lines, SACCT_REQUIRED, row, delimiter="|")


# -- Helios / Acme ------------------------------------------------------------------------------

HELIOS_REQUIRED = ("job_id", "gpu_num", "state", "submit_time")


def parse_helios(lines: Iterable[str], *, cluster: str = "", origin: float = 0.0) -> ParseResult:
    """The Helios ``cluster_log.csv`` (job_id, user, vc, gpu_num, cpu_num, node_num, state,
    submit_time, start_time, end_time, duration, queue) and the AcmeTrace job CSVs (no ``vc``; a
    ``type`` column). The VC is stored as the partition; times without a zone are read as UTC."""

    def row(r: dict[str, str]) -> dict[str, Any]:
        job_id, start, end = _id_and_times(r, origin)
        duration = parse_number(r.get("duration"), "duration")
        if end is None and start is not None and duration is not None:
            end = start + duration
        details = {k: r[k].strip() for k in ("cpu_num", "queue", "duration", "type") if (r.get(k) or "").strip()}
        return _job("helios", cluster, job_id, parse_state(r["state"]), user=_text(r.get("user")),
                    partition=_text(r.get("vc")), submit_ts=parse_time(r["submit_time"], "submit_time", origin),
                    start_ts=start, end_ts=end, gpus=parse_number(r["gpu_num"], "gpu_num", required=True),
                    nodes=_int(parse_number(r.get("node_num"), "node_num")), details=details or None)

    return _table(lines, HELIOS_REQUIRED, row)


# -- Alibaba openb pod lists --------------------------------------------------------------------

OPENB_REQUIRED = ("name", "num_gpu", "gpu_milli", "pod_phase", "creation_time")


def openb_gpus(num_gpu: float, gpu_milli: float) -> float:
    """GPUs a pod holds: ``num_gpu`` whole GPUs, or a ``gpu_milli``/1000 share of one GPU."""
    if num_gpu == 1 and 0 < gpu_milli < 1000:
        return gpu_milli / 1000.0
    return num_gpu


def parse_openb(lines: Iterable[str], *, cluster: str = "", origin: float = 0.0) -> ParseResult:
    """An openb pod list (cluster-trace-gpu-v2023). Times are seconds from the trace start, so
    ``origin`` (epoch seconds) places them; ``pod_phase`` is a snapshot (see the module table)."""

    def row(r: dict[str, str]) -> dict[str, Any]:
        name = r["name"].strip()
        if not name:
            raise RowError("name is empty")
        phase = r["pod_phase"].strip()
        if phase not in OPENB_PHASES:
            raise RowError(f"unknown pod_phase {phase!r}")
        num_gpu = parse_number(r["num_gpu"], "num_gpu", required=True)
        milli = parse_number(r["gpu_milli"], "gpu_milli", required=True)
        assert num_gpu is not None and milli is not None
        spec = _text(r.get("gpu_spec"))
        details = {"cpu_milli": parse_number(r.get("cpu_milli"), "cpu_milli"),
                   "memory_bytes": _mib(parse_number(r.get("memory_mib"), "memory_mib")),
                   "gpu_milli": milli, "qos": _text(r.get("qos")), "gpu_spec": spec}
        return _job("openb", cluster, name, OPENB_PHASES[phase],
                    submit_ts=parse_time(r["creation_time"], "creation_time", origin),
                    start_ts=parse_time(r.get("scheduled_time"), "scheduled_time", origin),
                    end_ts=parse_time(r.get("deletion_time"), "deletion_time", origin),
                    gpus=openb_gpus(num_gpu, milli), gpu_model=spec if spec and "|" not in spec else None,
                    nodes=1, details={k: v for k, v in details.items() if v is not None})

    return _table(lines, OPENB_REQUIRED, row)


def _mib(value: float | None) -> int | None:
    return None if value is None else int(value * 2**20)


# -- plain CSV ----------------------------------------------------------------------------------

CSV_REQUIRED = ("job_id", "submit_time", "gpus")
CSV_COLUMNS = (*CSV_REQUIRED, "start_time", "end_time", "state", "category", "user", "account", "partition",
               "nodes", "node_list", "gpu_model", "exit_code", "cluster")


def parse_plain_csv(lines: Iterable[str], *, cluster: str = "", origin: float = 0.0) -> ParseResult:
    """gpufleet's own job CSV (``CSV_COLUMNS``; only ``job_id``, ``submit_time`` and ``gpus`` are
    required). Times are epoch seconds or ISO 8601; ``state`` is a Slurm state name (default
    COMPLETED when the job has ended, else RUNNING or PENDING); ``category`` overrides the state's."""

    def row(r: dict[str, str]) -> dict[str, Any]:
        job_id, start, end = _id_and_times(r, origin)
        if _text(r.get("state")):
            state = parse_state(r["state"])
        else:
            state = "COMPLETED" if end is not None else "RUNNING" if start is not None else "PENDING"
        category = _text(r.get("category"))
        if category is not None and category not in CATEGORIES:
            raise RowError(f"unknown category {category!r} (one of {', '.join(CATEGORIES)})")
        job = _job("csv", _text(r.get("cluster")) or cluster, job_id, state, user=_text(r.get("user")),
                   account=_text(r.get("account")), partition=_text(r.get("partition")),
                   submit_ts=parse_time(r["submit_time"], "submit_time", origin), start_ts=start, end_ts=end,
                   gpus=parse_number(r["gpus"], "gpus", required=True),
                   nodes=_int(parse_number(r.get("nodes"), "nodes")), node_list=_text(r.get("node_list")),
                   gpu_model=_text(r.get("gpu_model")), exit_code=_text(r.get("exit_code")))
        if category is not None:
            job["category"] = category
        return job

    return _table(lines, CSV_REQUIRED, row)


PARSERS: dict[str, Callable[..., ParseResult]] = {
    "sacct": parse_sacct, "helios": parse_helios, "openb": parse_openb, "csv": parse_plain_csv,
}
