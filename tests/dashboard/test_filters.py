"""Filters round-trip through the query string and resolve to a window and a scope."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from dashboard.filters import DEFAULT_RANGE, Filters, sanitize
from db.readmodels import Scope

NOW = 1_764_000_000.0


def test_round_trip() -> None:
    f = Filters("custom", dt.date(2025, 11, 1), dt.date(2025, 11, 3), ("alpha",), ("n1", "n2"), ("H100",))
    q = f.to_query()
    assert q == {"range": ["custom"], "from": ["2025-11-01"], "to": ["2025-11-03"], "cluster": ["alpha"],
                 "node": ["n1", "n2"], "model": ["H100"]}
    assert Filters.from_query(q) == f
    assert Filters().to_query() == {}  # defaults stay out of links


def test_bad_values_fall_back() -> None:
    assert Filters.from_query({"range": ["3y"]}).range == DEFAULT_RANGE
    assert Filters.from_query({"range": ["custom"], "from": ["yesterday"]}).range == DEFAULT_RANGE
    swapped = Filters.from_query({"range": ["custom"], "from": ["2025-11-03"], "to": ["2025-11-01"]})
    assert (swapped.start_date, swapped.end_date) == (dt.date(2025, 11, 1), dt.date(2025, 11, 3))
    assert Filters.from_query({"node": ["a", "", "a"]}).nodes == ("a",)


def test_window_and_scope() -> None:
    assert Filters("24h").window(NOW) == (NOW - 86400, NOW)
    start, end = Filters("custom", dt.date(2025, 11, 1), dt.date(2025, 11, 1)).window(NOW)
    assert end - start == 86400 and dt.datetime.fromtimestamp(start, dt.timezone.utc).hour == 0
    # A custom range that reaches into the future ends now.
    today = dt.datetime.fromtimestamp(NOW, dt.timezone.utc).date()
    assert Filters("custom", today, today).window(NOW)[1] == NOW
    assert Filters(clusters=("a",), models=("m",)).scope() == Scope(("a",), (), ("m",))
    assert not Filters().scope()


def test_sanitize_drops_what_the_store_does_not_have() -> None:
    options = pd.DataFrame({"cluster": ["a", "a", "b"], "node": ["n1", "n2", "n3"], "model": ["H100"] * 3})
    f = sanitize(Filters(clusters=("a", "zz"), nodes=("n1", "n3", "gone"), models=("H100", "V100")), options)
    assert (f.clusters, f.nodes, f.models) == (("a",), ("n1",), ("H100",))
