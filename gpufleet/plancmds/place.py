"""``gpufleet plan place``: rank nodes and GPU sets for a job of N GPUs over the live store (health,
fragmentation increase, locality, measured speed), with the reason for each option. Exit status 1 when
no placement exists now."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("place", help="rank nodes and GPU sets for a job",
                         description="Rank the nodes and GPU sets free now for a job of N GPUs: one node first, "
                         "no unhealthy, unknown or draining GPU, fewer degraded GPUs, then the smallest "
                         "fragmentation increase and the fastest measured GPUs (gemm/train benchmarks). Exit "
                         "status 1 when no placement exists now.")
    p.add_argument("--gpus", type=int, required=True, metavar="N", help="GPUs the job needs")
    p.add_argument("--model", metavar="M", help="GPU model, or a part of its name (H100)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="options to show (5)")
    p.add_argument("--at", metavar="T", help="advise on the fleet as it was at T (ISO time, epoch seconds or "
                   "e.g. -6h; default now)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_db(p)


def at_time(value: str | None) -> float:
    """``--at``: any time ``gpufleet.timeargs`` reads (now, -6h, epoch seconds, ISO 8601); now when absent."""
    from gpufleet.timeargs import parse_time

    now = time.time()
    return now if value is None else parse_time(value, now, "--at")


def open_store(url: str | None) -> Any:
    """The engine of an existing, current store (a one-line error otherwise)."""
    from db.engine import ensure_schema, make_engine, resolve_url

    engine = make_engine(resolve_url(url))
    try:
        ensure_schema(engine, migrate=False)
    except Exception:
        engine.dispose()
        raise
    return engine


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError
    from planner.advice import advise

    if args.gpus < 1 or args.top < 1:
        raise UserError("--gpus and --top must be at least 1")
    now = at_time(args.at)
    engine = open_store(args.db)
    try:
        advice = advise(engine, args.gpus, args.model, now=now, top=args.top)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({
            "gpus": advice.gpus, "model": advice.model, "at": advice.at, "fragmentation_against": advice.workload,
            "options": [{"rank": i + 1, "nodes": list(o.nodes), "gpus": [{"node": n, "gpu": g} for n, g in o.gpus],
                         "model": o.model, "degraded_gpus": o.degraded,
                         "fragmentation_increase_gpus": o.fragmentation_increase, "speed": o.speed,
                         "reasons": list(o.reasons)} for i, o in enumerate(advice.options)],
            "excluded": advice.excluded, "notes": advice.notes}, indent=2))
        return 0 if advice.options else 1
    what = f"{advice.gpus} GPU{'s' if advice.gpus != 1 else ''}" + (f" of {advice.model}" if advice.model else "")
    print(f"placement for {what}, fleet as of {when(advice.at)}")
    print(f"fragmentation measured against {advice.workload}")
    for i, o in enumerate(advice.options, 1):
        print(f"{i:>2}. {o.describe()}  [{o.model or 'unknown model'}]")
        for reason in o.reasons:
            print(f"      - {reason}")
    if advice.excluded:
        print("not offered:")
        for node, why in advice.excluded.items():
            print(f"  {node}: {'; '.join(why)}")
    for note in advice.notes:
        print(f"note: {note}")
    return 0 if advice.options else 1
