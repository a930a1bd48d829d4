"""``gpufleet plan place``: rank nodes and GPU sets for a job (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("place", help="rank nodes and GPU sets for a job")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet plan place is being built")
