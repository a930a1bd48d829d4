"""``gpufleet plan forecast | simulate | place | recommend`` (issue 7); one module per subcommand."""

from __future__ import annotations

import argparse
from typing import Any

from gpufleet.plancmds import forecast, place, recommend, simulate

COMMANDS = {"forecast": forecast, "simulate": simulate, "place": place, "recommend": recommend}


def add_parsers(sub: Any, add_db: Any) -> None:
    plan = sub.add_parser("plan", help="capacity forecasts, what-if simulation, placement and recommendations")
    p_sub = plan.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    for module in COMMANDS.values():
        module.add_parser(p_sub, add_db)


def run(args: argparse.Namespace) -> int:
    return int(COMMANDS[args.plan_command].run(args))
