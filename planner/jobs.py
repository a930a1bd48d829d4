"""Jobs in the store: importing a scheduler's job log (all or nothing) and loading jobs for analysis.

A file is parsed whole first (``planner.jobformats``); any bad line fails the import before a row is
written, and the message names the first bad lines. Good files go in as one transaction of batched
Core inserts that skip rows already stored (the ``(source, cluster, external_id)`` unique key), so
importing the same file twice adds nothing.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from sqlalchemy import Engine, and_, func, or_, select

from db.engine import upsert
from db.models import Job
from planner.jobformats import FORMATS, PARSERS, ParseResult

BATCH_ROWS = 500
ERRORS_SHOWN = 5
JOB_COLUMNS = ("id", "source", "cluster", "external_id", "user", "account", "partition", "state", "category",
               "submit_ts", "start_ts", "end_ts", "gpus", "gpu_model", "nodes", "node_list", "exit_code")


class JobFileError(ValueError):
    """A job file that cannot be imported; the message is one line naming the first bad lines."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    rows: int  # job rows in the file
    inserted: int  # new jobs stored
    skipped: int  # rows skipped on purpose (sacct job steps)

    @property
    def already_present(self) -> int:
        return self.rows - self.inserted


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    raw = path.open("rb")
    try:
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            yield io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", newline="")
        else:
            raw.seek(0)
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")
    finally:
        raw.close()


def parse_job_file(path: str | Path, fmt: str, *, cluster: str = "", origin: float = 0.0) -> ParseResult:
    """Parse a job file (plain or gzip) in one of ``FORMATS``; raises ``JobFileError`` when the file
    cannot be read or has bad lines."""
    if fmt not in PARSERS:
        raise JobFileError(f"unknown job format {fmt!r} (one of {', '.join(FORMATS)})")
    p = Path(path)
    try:
        with _open_text(p) as handle:
            result = PARSERS[fmt](handle, cluster=cluster, origin=origin)
    except (OSError, EOFError) as exc:
        raise JobFileError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    except UnicodeDecodeError as exc:
        raise JobFileError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if result.errors:
        shown = "; ".join(f"line {n}: {reason}" for n, reason in result.errors[:ERRORS_SHOWN])
        more = f" (and {len(result.errors) - ERRORS_SHOWN} more)" if len(result.errors) > ERRORS_SHOWN else ""
        raise JobFileError(f"{p}: {len(result.errors)} bad line(s) in this {fmt} file, nothing imported: "
                           f"{shown}{more}")
    if not result.jobs and not result.skipped:
        raise JobFileError(f"{p}: no jobs in this {fmt} file")
    return result


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    table: Any = Job.__table__
    stmt = upsert(engine, table)
    if engine.dialect.name == "postgresql":  # SQLite's form takes no constraint name
        return stmt.on_conflict_do_nothing(constraint="uq_jobs_source_cluster_external")
    return stmt.on_conflict_do_nothing()


def store_jobs(engine: Engine, jobs: Sequence[dict[str, Any]]) -> int:
    """Insert ``jobs`` in one transaction, skipping any already stored; returns how many were new."""
    if not jobs:
        return 0
    stmt = _insert_ignoring_duplicates(engine)
    count = select(func.count()).select_from(Job)
    with engine.begin() as conn:
        before = conn.execute(count).scalar_one()
        for i in range(0, len(jobs), BATCH_ROWS):
            conn.execute(stmt, list(jobs[i:i + BATCH_ROWS]))
        after = conn.execute(count).scalar_one()
    return int(after - before)


def import_jobs(engine: Engine, path: str | Path, fmt: str, *, cluster: str = "", origin: float = 0.0) -> ImportResult:
    """Import a job log into the ``jobs`` table: everything or, on any bad line, nothing."""
    parsed = parse_job_file(path, fmt, cluster=cluster, origin=origin)
    return ImportResult(rows=len(parsed.jobs), inserted=store_jobs(engine, parsed.jobs), skipped=parsed.skipped)


def load_jobs(engine: Engine, start: float | None = None, end: float | None = None, *,
              cluster: str | None = None) -> pd.DataFrame:
    """Jobs alive at some point in [start, end): submitted before ``end`` and not ended before
    ``start`` (jobs with no end are still alive). Columns are ``JOB_COLUMNS``; unknown is NaN/None."""
    q = select(*(getattr(Job, c) for c in JOB_COLUMNS))
    if end is not None:
        q = q.where(or_(Job.submit_ts.is_(None), Job.submit_ts < end))
    if start is not None:
        q = q.where(or_(Job.end_ts.is_(None), Job.end_ts >= start))
    if cluster is not None:
        q = q.where(Job.cluster == cluster)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(Job.submit_ts)).all()
    frame = pd.DataFrame(rows, columns=list(JOB_COLUMNS))
    for c in ("submit_ts", "start_ts", "end_ts", "gpus", "nodes"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return frame


def job_time_bounds(engine: Engine, *, cluster: str | None = None) -> tuple[float, float] | None:
    """(earliest submit, latest submit or end) over the stored jobs; ``None`` when there are none."""
    q = select(func.min(Job.submit_ts), func.max(func.coalesce(Job.end_ts, Job.start_ts, Job.submit_ts)))
    if cluster is not None:
        q = q.where(and_(Job.cluster == cluster))
    with engine.connect() as conn:
        lo, hi = conn.execute(q).one()
    return None if lo is None or hi is None else (float(lo), float(hi))
