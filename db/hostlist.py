"""Slurm host lists (``jobs.node_list``) expanded to host names.

Shared by the ``idle_allocated`` alert (``alerts.series``) and the right-sizing rule
(``planner.recommend``), which may both import db only, so that both read a job's nodes the same way.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_UNASSIGNED = {"", "none", "none assigned"}


def expand_hostlist(hostlist: str | None) -> list[str]:
    """Slurm host lists (``gpu[01-03,07],login1``) and plain comma or space separated names; empty for
    ``None assigned`` (a pending job). A bracket that is not a list of numeric ranges is kept whole."""
    if hostlist is None or hostlist.strip().lower() in _UNASSIGNED:
        return []
    parts, depth, cur = [], 0, ""
    for ch in hostlist.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out: list[str] = []
    for part in filter(None, parts):
        m = re.match(r"^(.*?)\[([^\]]*)\](.*)$", part)
        if m is None:
            out.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            r = _RANGE.match(item.strip())
            if r is None:
                out.append(part)  # not a range we understand: keep it whole
                break
            lo, hi = r.group(1), r.group(2) or r.group(1)
            out.extend(f"{prefix}{n:0{len(lo)}d}{suffix}" for n in range(int(lo), int(hi) + 1))
    return out
