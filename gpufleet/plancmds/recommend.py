"""``gpufleet plan recommend``: what to fix, drain, reclaim, resize or rebalance now, with the evidence and
the expected gain of each (``planner.recommend``, the same list as the dashboard's Recommendations page);
``--ack ID`` acknowledges one, recorded in the audit log."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gpufleet.plancmds.place import at_time, open_store, when

DAY = 86400.0


def add_parser(p_sub: Any, add_db: Any) -> None:
    from planner.recommend import KINDS

    p = p_sub.add_parser("recommend", help="what to fix, drain or reclaim now, with the evidence",
                         description="Recommendations with their evidence and expected gain: drain or reset "
                         "(health, XID actions), idle-held GPUs to reclaim, jobs to right-size, quota moves "
                         "between partitions, GPU sharing, benchmark stragglers.")
    p.add_argument("--kind", action="append", default=[], metavar="K",
                   help=f"only these kinds (repeatable or comma-separated: {', '.join(KINDS)})")
    p.add_argument("--window-days", type=float, default=7.0, help="range the rules look at (7 days)")
    p.add_argument("--at", metavar="T", help="end of the range (ISO time, epoch seconds or e.g. -1d; default now)")
    p.add_argument("--vc-capacity", action="append", default=[], metavar="VC=GPUS",
                   help="GPUs of a partition for the quota rule (repeatable; default: GPUs of the nodes whose "
                   "cluster or 'partition' label names it)")
    p.add_argument("--hide-acknowledged", action="store_true", help="leave out acknowledged recommendations")
    p.add_argument("--ack", metavar="ID", help="acknowledge the recommendation with this id (audited)")
    p.add_argument("--note", help="a note for --ack")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_db(p)


def _kinds(values: list[str]) -> list[str] | None:
    from gpufleet.cli import UserError
    from planner.recommend import KINDS

    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UserError(f"unknown recommendation kind {', '.join(bad)} (one of {', '.join(KINDS)})")
    return kinds or None


def _capacities(values: list[str]) -> dict[str, float] | None:
    from gpufleet.cli import UserError

    out = {}
    for item in values:
        vc, _, gpus = item.partition("=")
        try:
            out[vc] = float(gpus)
        except ValueError:
            out[vc] = -1.0
        if not vc or not out[vc] > 0:
            raise UserError(f"--vc-capacity {item!r}: expected VC=GPUS with a positive number of GPUs")
    return out or None


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _evidence(ev: dict[str, Any]) -> str:
    return "; ".join(f"{k}={_number(v) if not isinstance(v, list) else ', '.join(map(str, v))}"
                     for k, v in ev.items() if v is not None)


def run(args: argparse.Namespace) -> int:
    from db import audit
    from gpufleet.cli import UserError
    from planner.recommend import acknowledge, recommend

    kinds = _kinds(args.kind)
    capacities = _capacities(args.vc_capacity)
    if not args.window_days > 0:
        raise UserError("--window-days must be positive")
    if args.note and not args.ack:
        raise UserError("--note goes with --ack ID")
    now = at_time(args.at)
    engine = open_store(args.db)
    try:
        recs = recommend(engine, now=now, window=args.window_days * DAY, kinds=kinds, capacities=capacities)
        if args.ack:
            found = next((r for r in recs if r.id == args.ack), None)
            if found is None:
                raise UserError(f"no current recommendation has id {args.ack} (gpufleet plan recommend lists them)")
            with audit.action(engine, audit.os_user(), "recommendation.ack", f"{found.kind} {found.target}",
                              {"id": found.id, "note": args.note}, source=audit.CLI) as act:
                ack = acknowledge(engine, found, audit.os_user(), args.note, now=None)
                act.message = f"acknowledged {found.id}"
            print(f"acknowledged {found.id} ({found.kind} {found.target}) as {ack.actor}")
            return 0
    finally:
        engine.dispose()
    if args.hide_acknowledged:
        recs = [r for r in recs if r.acknowledged_by is None]
    if args.json:
        print(json.dumps([r.as_dict() for r in recs], indent=2, default=str))
        return 0
    if not recs:
        print(f"nothing to recommend over the {args.window_days:g} days to {when(now)}")
        return 0
    print(f"{len(recs)} recommendation{'s' if len(recs) != 1 else ''} over the {args.window_days:g} days to "
          f"{when(now)}, most severe and largest gain first")
    for r in recs:
        print(f"[{r.severity}] {r.kind:<9} {r.title}")
        print(f"    expected gain: {r.gain:,.2f} {r.gain_unit}")
        print(f"    evidence: {_evidence(r.evidence)}")
        print(f"    action: {r.action}")
        acked = f"; acknowledged by {r.acknowledged_by} at {when(r.acknowledged_at or 0)}" if r.acknowledged_by else ""
        print(f"    id: {r.id}{acked}")
    return 0
