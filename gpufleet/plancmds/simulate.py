"""``gpufleet plan simulate``: simulate a job trace on a cluster under queue and placement policies (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(p_sub: Any, add_db: Any) -> None:
    p = p_sub.add_parser("simulate", help="simulate a job trace on a cluster under queue and placement policies")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet plan simulate is being built")
