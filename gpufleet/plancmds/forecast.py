"""``gpufleet plan forecast``: forecast GPU demand against capacity (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("forecast", help="forecast GPU demand against capacity")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet plan forecast is being built")
