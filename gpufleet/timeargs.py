"""Times given on the command line, one grammar for every command: ``now``, a duration back from
now (``-6h``, ``-30m``), epoch seconds, or RFC 3339 / ISO 8601 (a time without a zone is UTC)."""

from __future__ import annotations

import datetime as dt
import math

from alerts.rulefile import parse_duration
from gpufleet.cli import UserError


def parse_time(text: str, now: float, name: str) -> float:
    """Epoch seconds from ``now``, ``-6h`` (relative to now), epoch seconds or RFC 3339 (naive is UTC)."""
    t = text.strip()
    if t == "now":
        return now
    if t.startswith("-"):
        try:
            return now - parse_duration(t[1:])
        except ValueError:
            raise UserError(f"{name} {text!r}: expected a duration like -6h") from None
    try:
        number = float(t)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and number >= 0:
            return number
        raise UserError(f"{name} {text!r} is not a time")
    try:
        when = dt.datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise UserError(f"{name} {text!r} is not a time (RFC 3339, epoch seconds, now or e.g. -6h)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()
