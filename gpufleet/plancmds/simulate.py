"""``gpufleet plan simulate``: simulate a job trace on a cluster under queue and placement policies, and
find how many GPUs of a model keep the p90 queueing delay under a target (issue 7)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

TRACE_HELP = ("job trace: a CSV with job_id,submit_time,duration,num_gpu[,gpu_milli,cpu_milli,memory_mib,gpu_spec] "
              "(seconds; duration on a GPU of speed 1), or an openb pod list with creation/deletion times")


def add_parser(p_sub: Any, add_db: Any) -> None:
    from planner.placement import POLICIES
    from planner.simulate import QUEUE_POLICIES

    p = p_sub.add_parser("simulate", help="simulate a job trace on a cluster under queue and placement policies",
                         description="Replay a job trace on a cluster description and report queueing delay, "
                         "JCT, GPU allocation and fragmentation; with --add-model and --target-p90, search for "
                         "the fewest added nodes of a GPU model that keep the p90 queueing delay under a target.")
    p.add_argument("--trace", required=True, metavar="FILE", help=TRACE_HELP)
    p.add_argument("--cluster", required=True, metavar="FILE",
                   help="openb node list (.csv) or YAML description (nodes: [{name, count, gpus, model, cpu_milli, "
                   "memory_mib}], speed: {MODEL: factor})")
    p.add_argument("--queue", default="fifo", metavar="LIST",
                   help=f"queue policies, comma-separated ({', '.join(QUEUE_POLICIES)}; default fifo)")
    p.add_argument("--placement", default="fgd", metavar="LIST",
                   help=f"placement policies, comma-separated ({', '.join(POLICIES)}; default fgd)")
    p.add_argument("--speed", action="append", default=[], metavar="MODEL=FACTOR",
                   help="relative speed of a GPU model (run time is divided by it; repeatable; overrides the YAML)")
    p.add_argument("--seed", type=int, default=0, help="seed for random tie-breaking (default 0)")
    p.add_argument("--add-model", metavar="MODEL", help="GPU model to add in the capacity search")
    p.add_argument("--target-p90", type=float, metavar="SECONDS", help="p90 queueing delay to stay under")
    p.add_argument("--add-node-gpus", type=int, metavar="N",
                   help="GPUs per added node (default: like the cluster's nodes of that model, else 8)")
    p.add_argument("--max-add", type=int, default=1024, metavar="NODES", help="search limit (default 1024 nodes)")
    p.add_argument("--json", action="store_true", help="print JSON (summaries, time series, search)")


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    from gpufleet.cli import UserError

    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or repr(text)} (one of {', '.join(allowed)})")
    return items


def _speeds(items: list[str], base: dict[str, float]) -> dict[str, float]:
    from gpufleet.cli import UserError

    out = dict(base)
    for item in items:
        model, _, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = math.nan
        if not model or not value > 0:
            raise UserError(f"--speed {item!r}: expected MODEL=FACTOR with a positive factor")
        out[model] = value
    return out


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["queue", "placement", "jobs", "unplaceable", "delay p50", "delay p90", "delay p99", "JCT mean",
            "alloc", "frag"]
    body = [[r["queue"], r["placement"], str(r["jobs"]), str(r["unplaceable"]), _dur(r["queue_delay_p50_s"]),
             _dur(r["queue_delay_p90_s"]), _dur(r["queue_delay_p99_s"]), _dur(r["jct_mean_s"]),
             _ratio(r["mean_allocation_ratio"]), _ratio(r["mean_fragmentation_ratio"])] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError
    from planner.cluster import ClusterFileError, load_cluster
    from planner.placement import POLICIES
    from planner.simulate import QUEUE_POLICIES, capacity_search, load_trace, node_template, simulate

    queues = _choices(args.queue, QUEUE_POLICIES, "queue policy")
    placements = _choices(args.placement, POLICIES, "placement policy")
    if (args.add_model is None) != (args.target_p90 is None):
        raise UserError("--add-model and --target-p90 go together")
    if args.target_p90 is not None and (len(queues) > 1 or len(placements) > 1):
        raise UserError("the capacity search takes one --queue and one --placement")
    if args.target_p90 is not None and not args.target_p90 >= 0:
        raise UserError("--target-p90 must be a non-negative number of seconds")
    try:
        desc = load_cluster(args.cluster)
        trace = load_trace(args.trace)
    except ClusterFileError as exc:
        raise UserError(str(exc)) from None
    if len(trace) == 0:
        raise UserError(f"{args.trace}: no jobs")
    speed = _speeds(args.speed, desc.speed)
    results = [simulate(desc.cluster, trace, q, pl, speed, args.seed) for q in queues for pl in placements]
    out: dict[str, Any] = {"results": [dict(r.summary(), series=r.series()) for r in results]}
    search = None
    if args.add_model is not None:
        template = node_template(desc.cluster, args.add_model, args.add_node_gpus)
        if template.gpus <= 0:
            raise UserError("--add-node-gpus must be positive")
        search = capacity_search(desc.cluster, trace, template, args.target_p90, max_added=args.max_add,
                                 queue=queues[0], placement=placements[0], speed=speed, seed=args.seed)
        out["capacity"] = {"model": args.add_model, "target_p90_s": args.target_p90, "gpus_per_node": template.gpus,
                           "added_nodes": search.added_nodes, "added_gpus": search.added_gpus,
                           "evaluations": [{"added_nodes": k, "queue_delay_p90_s": v if math.isfinite(v) else None}
                                           for k, v in sorted(search.evaluations.items())]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(_table([r.summary() for r in results]))
    if search is not None:
        print()
        for k, v in sorted(search.evaluations.items()):
            print(f"  +{k} node(s) of {args.add_model}: p90 queueing delay {_dur(v if math.isfinite(v) else None)}")
        if search.added_nodes is None:
            print(f"no answer: even {args.max_add} added {args.add_model} nodes leave p90 above "
                  f"{_dur(args.target_p90)}")
        else:
            print(f"add {search.added_nodes} node(s) of {args.add_model} ({search.added_gpus} GPUs) to keep p90 "
                  f"queueing delay <= {_dur(args.target_p90)}")
    return 0
