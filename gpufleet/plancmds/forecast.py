"""``gpufleet plan forecast``: forecast GPU demand against capacity, say when it runs out and what to add.

Demand comes from a series file (``--series``: Helios VC or Philly node sequences, or a plain
``time,demand[,capacity]`` CSV) or from the store: the jobs table (running + pending GPUs) when it
has jobs, else GPU telemetry (allocated GPUs, a lower bound since the queue is invisible).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

DAY = 86400.0


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("forecast", help="forecast GPU demand against capacity",
                         description="Forecast demand (running + pending GPUs) with a seasonal model, backtest it "
                                     "against the seasonal-naive baseline, and say when p95 demand exceeds usable "
                                     "capacity x target allocation and how many GPUs to add.")
    p.add_argument("--series", metavar="FILE", help="demand series file instead of the store (Helios VC sequence, "
                   "Philly node sequence, or CSV with time,demand[,capacity])")
    p.add_argument("--capacity-file", metavar="FILE",
                   help="capacity by date and pool (e.g. Helios Earth_gpu_number.csv)")
    p.add_argument("--capacity-column", metavar="NAME", help="column of --capacity-file (default: the series' VC name, "
                   "else 'total')")
    p.add_argument("--capacity", type=float, metavar="N", help="latest capacity, overriding what the data says")
    p.add_argument("--planned", action="append", default=[], metavar="DATE=N",
                   help="planned capacity N from DATE on (repeatable)")
    p.add_argument("--start", metavar="T", help="history start (ISO time, epoch seconds or e.g. -30d; store only; "
                   "default: 28 days before --end, or the first job)")
    p.add_argument("--end", metavar="T", help="history end (default: the newest job or now)")
    p.add_argument("--horizon-days", type=float, default=14.0, help="how far ahead to forecast (14)")
    p.add_argument("--backtest-days", type=float, default=7.0, help="horizon of each backtest fold (7)")
    p.add_argument("--folds", type=int, default=3, help="rolling-origin backtest folds (3)")
    p.add_argument("--target", type=float, default=0.8, help="target allocation, 0-1 (0.8)")
    p.add_argument("--gpu-model", metavar="M", help="GPU model to add (default: the fleet's most common)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="round additions up to whole nodes (8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_db(p)


def _time(value: str | None, name: str) -> float | None:
    from gpufleet.timeargs import parse_time

    return None if value is None else parse_time(value, time.time(), name)


def _planned(values: list[str]) -> list[tuple[Any, float]]:
    import pandas as pd

    from gpufleet.cli import UserError

    out = []
    for item in values:
        date, _, number = item.partition("=")
        try:
            out.append((pd.Timestamp(date, tz="UTC"), float(number)))
        except ValueError as exc:
            raise UserError(f"--planned {item!r}: expected DATE=GPUS, e.g. 2026-03-01=1024") from exc
    return out


def _from_series(args: argparse.Namespace) -> tuple[Any, str | None]:
    from planner.demand import capacity_on, read_capacity_file, read_series_file

    usage = read_series_file(args.series)
    if args.capacity_file:
        import pandas as pd

        cols = pd.read_csv(args.capacity_file, nrows=0).columns
        column = args.capacity_column or (usage.name if usage.name in cols else "total")
        usage.frame["capacity"] = capacity_on(usage.frame.index, read_capacity_file(args.capacity_file, column))
    return usage, args.gpu_model


def _from_store(args: argparse.Namespace) -> tuple[Any, str | None, int]:
    import math
    import time

    from db.engine import ensure_schema, make_engine, resolve_url
    from gpufleet.cli import UserError
    from planner.demand import fleet_gpu_model, unhealthy_gpus
    from planner.jobs import job_time_bounds
    from planner.whatif import store_usage

    engine = make_engine(resolve_url(args.db))
    try:
        ensure_schema(engine, migrate=False)
        bounds = job_time_bounds(engine)
        end = _time(args.end, "--end") or (bounds[1] if bounds else time.time())
        start = _time(args.start, "--start") or max(end - 28 * DAY, bounds[0] if bounds else -math.inf)
        if end <= start:
            raise UserError("--end must be after --start")
        usage = store_usage(engine, start, end)  # the same demand the Capacity page shows
        if usage is None:
            raise UserError("no jobs and no GPU telemetry in the store for that range: import jobs "
                            "('gpufleet import jobs') or pass --series FILE")
        return usage, args.gpu_model or fleet_gpu_model(engine), unhealthy_gpus(engine)
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    import math

    import pandas as pd

    from gpufleet.cli import UserError
    from planner.demand import SeriesFileError
    from planner.forecast import backtest, capacity_answer, capacity_path, fit_forecast

    if not 0 < args.target <= 1:
        raise UserError(f"--target {args.target} is not in (0, 1]")
    if args.horizon_days <= 0 or args.backtest_days <= 0 or args.folds < 1 or args.gpus_per_node < 1:
        raise UserError("--horizon-days, --backtest-days, --folds and --gpus-per-node must be positive")
    planned = _planned(args.planned)
    try:
        if args.series:
            usage, model = _from_series(args)
            unavailable = 0
        else:
            usage, model, unavailable = _from_store(args)
    except SeriesFileError as exc:
        raise UserError(str(exc)) from exc
    demand = usage.frame["demand"]
    if demand.notna().sum() < 48:
        raise UserError(f"{usage.name}: {demand.notna().sum()} hours of demand; a forecast needs at least 48")
    capacity = usage.frame["capacity"].dropna()
    latest = args.capacity if args.capacity is not None else (
        float(capacity.iloc[-24:].max()) if len(capacity) else math.nan)
    if math.isnan(latest):
        raise UserError(f"{usage.name}: no capacity known; pass --capacity GPUS or --capacity-file FILE")
    horizon = max(1, round(args.horizon_days * 24))
    fc = fit_forecast(demand, horizon)
    usable = capacity_path(fc.frame.index, latest, planned=planned, unavailable=unavailable)
    per_node = args.gpus_per_node if usage.unit == "GPUs" else 1
    answer = capacity_answer(fc, usable, target=args.target, per_node=per_node, unit=usage.unit, model=model)
    try:
        bt = backtest(demand, max(1, round(args.backtest_days * 24)), folds=args.folds)
    except ValueError as exc:
        bt, bt_note = None, str(exc)
    history = (demand.index[0], demand.index[-1])
    if args.json:
        doc = {
            "series": usage.name, "unit": usage.unit, "demand": usage.definition,
            "history": [t.isoformat() for t in history], "hours": int(demand.notna().sum()),
            "capacity_latest": latest, "unavailable": unavailable, "target": args.target, "model": fc.model,
            "answer": answer.sentence(),
            "exceeds_at": answer.exceeds_at.isoformat() if answer.exceeds_at is not None else None,
            "add": answer.add, "gpu_model": model, "peak_p95": answer.peak_upper,
            "forecast": [{"ts": t.isoformat(), "mean": m, "p5": lo, "p95": hi} for t, m, lo, hi in
                         zip(fc.frame.index, fc.frame["mean"], fc.frame["lower"], fc.frame["upper"], strict=True)],
            "backtest": None if bt is None else {
                "horizon_hours": bt.horizon, "model_smape": bt.model_smape, "baseline_smape": bt.baseline_smape,
                "model_mae": bt.model_mae, "baseline_mae": bt.baseline_mae, "coverage": bt.coverage,
                "folds": [{**r, "origin": pd.Timestamp(r["origin"]).isoformat()}
                          for r in bt.folds.to_dict("records")]},
        }
        print(json.dumps(doc, indent=2, default=float))
        return 0
    print(f"demand:   {usage.name}: {usage.definition}, {history[0]:%Y-%m-%d %H:%M} .. "
          f"{history[1]:%Y-%m-%d %H:%M} UTC, {demand.notna().sum():,} hours")
    print(f"capacity: {latest:,.0f} {usage.unit} latest" + (f", {unavailable} unhealthy" if unavailable else "")
          + (f", planned {', '.join(f'{n:,.0f} from {d:%Y-%m-%d}' for d, n in planned)}" if planned else "")
          + f"; target allocation {args.target:.0%}")
    print(f"model:    {fc.model}, {args.horizon_days:g}-day horizon, {fc.level:.0%} interval")
    print(f"answer:   {answer.sentence()}")
    if bt is None:
        print(f"backtest: skipped ({bt_note})")
        return 0
    print(f"backtest: rolling origin, {bt.horizon} h per fold, sMAPE of the model vs the seasonal-naive baseline")
    print(f"  {'origin (UTC)':<17} {'train h':>7} {'model':>8} {'baseline':>9} {'MAE model':>10} {'MAE base':>9} "
          f"{'coverage':>9}")
    for r in bt.folds.itertuples():
        print(f"  {r.origin:%Y-%m-%d %H:%M} {r.train_hours:>7} {r.model_smape:>8.1%} {r.baseline_smape:>9.1%} "
              f"{r.model_mae:>10.1f} {r.baseline_mae:>9.1f} {r.coverage:>9.0%}")
    print(f"  {'mean':<17} {'':>7} {bt.model_smape:>8.1%} {bt.baseline_smape:>9.1%} {bt.model_mae:>10.1f} "
          f"{bt.baseline_mae:>9.1f} {bt.coverage:>9.0%}")
    return 0
