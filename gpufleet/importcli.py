"""``gpufleet import prometheus | jobs``: each source's parser and runner live in its own module."""

from __future__ import annotations

import argparse
from typing import Any

from gpufleet import jobscli, promcli


def add_parsers(sub: Any, add_db: Any) -> None:
    imp = sub.add_parser("import", help="import telemetry from Prometheus or jobs from a scheduler's log")
    i_sub = imp.add_subparsers(dest="import_command", required=True, metavar="SOURCE")
    promcli.add_parser(i_sub, add_db)
    jobscli.add_parser(i_sub, add_db)


def run(args: argparse.Namespace) -> int:
    if args.import_command == "prometheus":
        return promcli.run(args)
    return jobscli.run(args)
