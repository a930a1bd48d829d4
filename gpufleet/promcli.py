"""``gpufleet import prometheus``: dcgm-exporter and node_exporter series into the store (issue 6)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(i_sub: Any, add_db: Any) -> None:
    p = i_sub.add_parser("prometheus", help="import dcgm-exporter and node_exporter series from Prometheus")
    p.add_argument("--url", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    p.add_argument("--start", metavar="T", help="range start (RFC 3339, epoch seconds, or e.g. -6h)")
    p.add_argument("--end", metavar="T", help="range end (default: now)")
    add_db(p)


def run(args: argparse.Namespace) -> int:
    from gpufleet.cli import UserError

    raise UserError("gpufleet import prometheus is being built")
