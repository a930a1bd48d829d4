"""``gpufleet bench run | list``: the benchmark workloads of ``agent/workloads`` (issue 4)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from agent.workloads.base import SUITES

# Display scales per stored (base) unit: the largest step not above the value.
_SCALES = {
    "B/s": ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s"), (1.0, "B/s")),
    "ops/s": ((1e6, "Mops/s"), (1e3, "kops/s"), (1.0, "ops/s")),
    "s": ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")),
    "tokens/s": ((1e6, "Mtokens/s"), (1e3, "ktokens/s"), (1.0, "tokens/s")),
}
HEAD = ("workload", "params", "metric", "value", "unit", "median", "p90", "CV", "n")


def add_parsers(sub: Any, add_db: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark workloads: training, inference, gemm, bandwidth, storage")
    b_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    run = b_sub.add_parser("run", help="run a suite of workloads, store and print the results (exit 1 when a "
                           "workload failed)")
    run.add_argument("--suite", choices=SUITES, default="quick",
                     help="quick (under a minute on a laptop), standard, full (default quick)")
    run.add_argument("--workload", action="append", metavar="NAME", help="only this workload (repeatable; "
                     "see 'gpufleet bench list')")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: cuda when torch sees a GPU, else cpu")
    add_db(run)
    run.add_argument("--json", action="store_true", help="print machine-readable results")
    b_sub.add_parser("list", help="the workloads and what each measures")


def run(args: argparse.Namespace) -> int:
    if args.bench_command == "list":
        return list_workloads(sys.stdout)
    return run_suite(args)


def list_workloads(out: TextIO) -> int:
    from agent import workloads

    ws = workloads.select()
    width = max(len(w.name) for w in ws)
    for w in ws:
        print(f"{w.name:<{width}}  {w.description}", file=out)
    return 0


def run_suite(args: argparse.Namespace) -> int:
    from agent import workloads
    from agent.workloads.runner import DeviceUnavailable, Runner, resolve_device
    from db.engine import ensure_schema, make_engine, resolve_url
    from gpufleet.cli import UserError

    try:  # bad input fails before anything is created
        workloads.select(args.workload)
        device = resolve_device(args.device)
    except (workloads.UnknownWorkload, DeviceUnavailable) as exc:
        raise UserError(str(exc.args[0] if exc.args else exc)) from None
    engine = make_engine(resolve_url(args.db))
    ensure_schema(engine)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    records = Runner(suite=args.suite, device=device, workloads=args.workload, engine=engine,
                     progress=bar.update if bar else None).run()
    if bar:
        bar.finish()
    refresh_stragglers(engine)
    if args.json:
        print(json.dumps({"suite": args.suite, "device": device, "runs": [r.as_dict() for r in records]},
                         indent=2, default=str))
    else:
        print_table([r.as_dict() for r in records], sys.stdout)
    return 1 if any(r.result.status == "failed" for r in records) else 0


def refresh_stragglers(engine: Any) -> None:
    """Let the straggler detector see the new results (and raise ``bench_slow`` events)."""
    from planner.stragglers import refresh

    refresh(engine)


# -- output -----------------------------------------------------------------------------------


def scaled(value: float | None, unit: str) -> tuple[float | None, str, float]:
    """(value in the display unit, that unit, the factor): 7.1e9 B/s -> (7.1, "GB/s", 1e9)."""
    steps = _SCALES.get(unit)
    if value is None or steps is None or value == 0 or not math.isfinite(value):
        return value, unit, 1.0
    for factor, name in steps:
        if abs(value) >= factor:
            return value / factor, name, factor
    factor, name = steps[-1]
    return value / factor, name, factor


def number(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 0.01 else f"{x:.2e}"


def params_text(params: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1024 and v & (v - 1) == 0:
            for div, suffix in ((1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")):
                if v >= div:
                    return f"{v // div}{suffix}"
        return str(v)

    return " ".join(f"{k}={short(v)}" for k, v in params.items())


def table_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in runs:
        params = params_text(r["params"])
        if r["status"] != "ok" or not r["metrics"]:
            rows.append([r["workload"], params, "-", r["status"], "-", "-", "-", "-", "-"])
            continue
        for m in r["metrics"]:
            value, unit, factor = scaled(m["value"], m["unit"] or "")
            cv = f"{m['cv']:.1%}" if m["cv"] is not None else "-"
            rows.append([r["workload"], params, m["metric"], number(value), unit,
                         number(m["median"] / factor if m["median"] is not None else None),
                         number(m["p90"] / factor if m["p90"] is not None else None), cv,
                         str(m["count"]) if m["count"] is not None else "-"])
    return rows


def print_table(runs: Sequence[dict[str, Any]], out: TextIO) -> None:
    rows = table_rows(runs)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEAD)]
    right = {3, 5, 6, 7, 8}
    for line in (list(HEAD), *rows):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                 strict=True))).rstrip(),
              file=out)
    for r in runs:
        label = f"{r['workload']} {params_text(r['params'])}".strip()
        if r["error"]:
            print(f"{r['status']}: {label}: {r['error']}", file=out)
        for note in r["notes"]:
            print(f"note: {label}: {note}", file=out)
    ids = [r["run_id"] for r in runs if r["run_id"] is not None]
    if ids:
        print(f"stored {len(ids)} runs (ids {min(ids)}-{max(ids)}) with their environment fingerprints", file=out)


class ProgressBar:
    """One self-overwriting line on a terminal: ``[#####.....] 5/18 gemm dtype=fp32 m=256``."""

    def __init__(self, out: TextIO, width: int = 24) -> None:
        self.out, self.width = out, width

    def update(self, done: int, total: int, what: str) -> None:
        filled = self.width * done // total if total else self.width
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {what}"
        self.out.write("\r\x1b[2K" + line[:120])
        self.out.flush()

    def finish(self) -> None:
        self.out.write("\r\x1b[2K")
        self.out.flush()
