"""One grammar for times on the command line: the planner's ``--at``/``--start``/``--end`` read
what ``gpufleet import prometheus`` reads (now, -6h, epoch seconds, RFC 3339), with one clear error."""

from __future__ import annotations

import time

import pytest

from gpufleet.cli import UserError
from gpufleet.plancmds.forecast import _time
from gpufleet.plancmds.place import at_time
from gpufleet.timeargs import parse_time

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW), ("-6h", NOW - 6 * 3600), ("-30d", NOW - 30 * 86400), ("1767225000", 1_767_225_000.0),
    ("2026-01-01T00:00:00Z", NOW), ("2026-01-01T01:00:00+01:00", NOW), ("2026-01-01 00:00:00", NOW),
])
def test_times(text: str, expected: float) -> None:
    assert parse_time(text, NOW, "--at") == expected


@pytest.mark.parametrize("text", ["soon", "-6 parsecs", "nan", "-1", "2026-13-01"])
def test_bad_times_are_one_line(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_time(text, NOW, "--at")
    assert "--at" in str(err.value) and "\n" not in str(err.value)


def test_planner_commands_read_relative_times() -> None:
    assert abs(at_time("-1h") - (time.time() - 3600)) < 5
    assert abs(at_time(None) - time.time()) < 5
    start = _time("-30d", "--start")
    assert start is not None and abs(start - (time.time() - 30 * 86400)) < 5
    assert _time(None, "--end") is None
    with pytest.raises(UserError, match="--start"):
        _time("yesterday-ish", "--start")


@pytest.mark.parametrize("argv", [
    ["plan", "place", "--gpus", "4", "--at", "-1h", "--json"],
    ["plan", "recommend", "--at", "-1d", "--json"],
    ["plan", "forecast", "--start", "-30d", "--end", "-1h"],
    ["import", "prometheus", "--url", "http://127.0.0.1:9", "--start", "-6h", "--end", "-1h"],
])
def test_a_time_back_from_now_reaches_its_command_as_typed(argv: list[str]) -> None:
    """argparse alone reads ``--at -6h`` as two options; the command line must take it as typed."""
    from gpufleet.cli import _join_relative_times, build_parser

    args = build_parser().parse_args(_join_relative_times(argv))
    options = dict(zip(argv, argv[1:], strict=False))
    for name in ("--at", "--start", "--end"):
        if name in options:
            assert getattr(args, name[2:]) == options[name]


def test_only_time_options_take_a_dash_value() -> None:
    from gpufleet.cli import _join_relative_times

    assert _join_relative_times(["plan", "place", "--at", "-6h", "--top", "3"]) == [
        "plan", "place", "--at=-6h", "--top", "3"]
    assert _join_relative_times(["--at", "--json"]) == ["--at", "--json"]  # no value: argparse says so
    assert _join_relative_times(["--top", "-3"]) == ["--top", "-3"]
