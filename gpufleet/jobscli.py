"""``gpufleet import jobs FILE --format sacct|helios|openb|csv`` (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(i_sub: Any, add_db: Any) -> None:
    p = i_sub.add_parser("jobs", help="import a job log (Slurm sacct, Helios, openb pod list, plain CSV)")
    p.add_argument("file")
    p.add_argument("--format", required=True, choices=("sacct", "helios", "openb", "csv"))
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet import jobs is being built")
