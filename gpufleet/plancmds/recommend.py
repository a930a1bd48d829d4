"""``gpufleet plan recommend``: what to fix, drain or reclaim now, with the evidence (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("recommend", help="what to fix, drain or reclaim now, with the evidence")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet plan recommend is being built")
