"""``gpufleet import jobs FILE --format sacct|helios|openb|csv``: a job log into the ``jobs`` table.

The file is read and checked whole before the store is opened; a file with any bad line imports
nothing and the error names its first bad lines. Re-importing a file adds nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from planner.jobformats import CSV_COLUMNS, FORMATS


def add_parser(i_sub: Any, add_db: Any) -> None:
    p = i_sub.add_parser(
        "jobs", help="import a job log (Slurm sacct, Helios/Acme, openb pod list, plain CSV)",
        description="Import a job log. sacct: output of 'sacct --parsable2 --allocations --format "
                    "JobID,User,Account,Partition,State,Submit,Start,End,ReqTRES,AllocTRES,NodeList,ExitCode'. "
                    "helios: HeliosData cluster_log.csv or AcmeTrace job CSV. openb: Alibaba "
                    f"cluster-trace-gpu-v2023 pod list. csv: columns {', '.join(CSV_COLUMNS)} (the first three "
                    "required; times are epoch seconds or ISO 8601, UTC when no zone is given).")
    p.add_argument("file", help="the job log (plain or gzip-compressed)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--cluster", default="", help="cluster name stored with each job (keeps traces apart)")
    p.add_argument("--origin", default="0", metavar="T",
                   help="epoch seconds or ISO time added to relative times (openb times start at 0)")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from db.engine import ensure_schema, make_engine, redact, resolve_url
    from gpufleet.cli import UserError
    from planner.jobformats import RowError, parse_time
    from planner.jobs import JobFileError, parse_job_file, store_jobs

    try:
        origin = parse_time(args.origin, "--origin") or 0.0
        parsed = parse_job_file(args.file, args.format, cluster=args.cluster, origin=origin)
    except (JobFileError, RowError) as exc:
        raise UserError(str(exc)) from exc
    url = resolve_url(args.db)
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        inserted = store_jobs(engine, parsed.jobs)
    finally:
        engine.dispose()
    steps = f", {parsed.skipped:,} job steps skipped" if parsed.skipped else ""
    print(f"{args.file}: {len(parsed.jobs):,} jobs read, {inserted:,} new, "
          f"{len(parsed.jobs) - inserted:,} already in {redact(url)}{steps}")
    return 0
