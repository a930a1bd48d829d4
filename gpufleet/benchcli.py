"""``gpufleet bench run | list``: the benchmark workloads of ``agent/workloads`` (issue 4)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any, add_db: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark workloads: training, inference, gemm, bandwidth, storage")
    b_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    run = b_sub.add_parser("run", help="run a suite of workloads, store and print the results")
    run.add_argument("--suite", choices=("quick", "standard", "full"), default="quick")
    run.add_argument("--workload", action="append", metavar="NAME", help="only this workload (repeatable)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_db(run)
    run.add_argument("--json", action="store_true", help="print machine-readable results")
    b_sub.add_parser("list", help="the workloads and what each measures")


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet bench is being built")
