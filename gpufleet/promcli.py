"""``gpufleet import prometheus``: dcgm-exporter and node_exporter series into the store (issue 6).
The importer is ``gpufleet.promimport``; the mapping table is ``collectors.dcgm`` (docs/PROMETHEUS.md)."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any


def add_parser(i_sub: Any, add_db: Any) -> None:
    p = i_sub.add_parser("prometheus", help="import dcgm-exporter and node_exporter series from Prometheus",
                         description="Import dcgm-exporter and node_exporter series (mapping: docs/PROMETHEUS.md). "
                         "Importing a range twice adds nothing; --continuous keeps a cursor in the store and "
                         "resumes after it.")
    p.add_argument("--url", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    p.add_argument("--start", metavar="T", help="range start: RFC 3339, epoch seconds, now, or e.g. -6h "
                   "(default -1h; with --continuous only where no cursor is stored yet)")
    p.add_argument("--end", metavar="T", help="range end (default: now less two steps, so late scrapes are in)")
    p.add_argument("--step", metavar="S", default="15s", help="sample spacing, whole seconds, e.g. 15s (default); "
                   "use the scrape interval")
    p.add_argument("--continuous", action="store_true", help="keep importing new data until stopped (SIGTERM)")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from db.engine import ensure_schema, make_engine, redact, resolve_url
    from gpufleet.cli import UserError
    from gpufleet.promimport import PrometheusImporter, PromSource, default_lag, iso, parse_step
    from gpufleet.timeargs import parse_time

    step = parse_step(args.step)
    now = time.time()
    lag = default_lag(step)
    start = parse_time(args.start or "-1h", now, "--start")
    if args.continuous and args.end:
        raise UserError("--end and --continuous exclude each other")
    end = parse_time(args.end, now, "--end") if args.end else now - lag
    if end <= start:
        raise UserError(f"--end {iso(end)} is not after --start {iso(start)}")
    source = PromSource(args.url)
    source.series_count(end - 60, end)  # an unreachable or wrong server fails here, before the store is touched
    url = resolve_url(args.db)
    engine = make_engine(url)
    began = time.monotonic()
    try:
        ensure_schema(engine)
        importer = PrometheusImporter(engine, source, step)
        if args.continuous:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            print(f"importing from {source.name} every {step} s into {redact(url)}; SIGTERM stops", flush=True)
            try:
                stats = importer.follow(start, stop, lag=lag)
            except KeyboardInterrupt:
                stats = None
            done = importer.cursor()
            print(f"stopped; imported up to {iso(done) if done is not None else 'nothing yet'}")
            return 0 if stats is not None else 130
        stats = importer.import_range(start, end)
        print(f"imported {stats.summary()} from {source.name}, {iso(start)} to {iso(end)}, step {step} s, "
              f"in {time.monotonic() - began:.1f} s")
        return 0
    finally:
        source.close()
        engine.dispose()
