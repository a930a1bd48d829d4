"""The controls every page shares: time range, cluster, node and GPU model, kept in the URL.

``Filters`` is plain data (parsed from and written to a query string, turned into a time window
and a ``Scope``), tested without Streamlit. ``render`` draws the controls in the sidebar from the
router, so they survive page switches; the URL is read on a new session and whenever a link changed
it (a node link from the overview), and rewritten after every change, so a view can be shared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from db.readmodels import Scope

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
RANGE_LABELS = {"1h": "Last 1 hour", "6h": "Last 6 hours", "24h": "Last 24 hours", "7d": "Last 7 days",
                "30d": "Last 30 days", "custom": "Custom (UTC dates)"}
DEFAULT_RANGE = "6h"
QUERY_KEYS = ("range", "from", "to", "cluster", "node", "model")
_STATE = {"range": "f_range", "dates": "f_dates", "cluster": "f_cluster", "node": "f_node", "model": "f_model"}
_WRITTEN = "f_written_query"


@dataclass(frozen=True, slots=True)
class Filters:
    range: str = DEFAULT_RANGE
    start_date: dt.date | None = None  # custom range, inclusive UTC dates
    end_date: dt.date | None = None
    clusters: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """Parse a query string (each key to its list of values); bad values fall back to defaults."""
        def values(key: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(v for v in query.get(key, ()) if v))

        rng = (values("range") or (DEFAULT_RANGE,))[-1]
        start, end = _date((values("from") or ("",))[-1]), _date((values("to") or ("",))[-1])
        if rng not in RANGE_LABELS or (rng == "custom" and (start is None or end is None)):
            rng, start, end = DEFAULT_RANGE, None, None
        if rng != "custom":
            start = end = None
        elif start and end and end < start:
            start, end = end, start
        return cls(rng, start, end, values("cluster"), values("node"), values("model"))

    def to_query(self) -> dict[str, list[str]]:
        """The query string for this view; defaults are left out to keep links short."""
        q: dict[str, list[str]] = {}
        if self.range != DEFAULT_RANGE:
            q["range"] = [self.range]
        if self.range == "custom" and self.start_date and self.end_date:
            q["from"], q["to"] = [self.start_date.isoformat()], [self.end_date.isoformat()]
        for key, vals in (("cluster", self.clusters), ("node", self.nodes), ("model", self.models)):
            if vals:
                q[key] = list(vals)
        return q

    def window(self, now: float) -> tuple[float, float]:
        """[start, end) in epoch seconds; a custom range ends at the end of its last day or now."""
        if self.range == "custom" and self.start_date and self.end_date:
            start = dt.datetime.combine(self.start_date, dt.time(), dt.timezone.utc).timestamp()
            end = dt.datetime.combine(self.end_date + dt.timedelta(days=1), dt.time(), dt.timezone.utc).timestamp()
            return start, max(start + 60, min(end, now))
        return now - RANGES.get(self.range, RANGES[DEFAULT_RANGE]), now

    def scope(self) -> Scope:
        return Scope(self.clusters, self.nodes, self.models)

    def describe(self) -> str:
        what = RANGE_LABELS.get(self.range, self.range)
        if self.range == "custom":
            what = f"{self.start_date} to {self.end_date} (UTC)"
        parts = [what, *(f"{k}: {', '.join(v)}" for k, v in (("cluster", self.clusters), ("node", self.nodes),
                                                               ("model", self.models)) if v)]
        return " · ".join(parts)


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def sanitize(f: Filters, options: pd.DataFrame) -> Filters:
    """Drop filter values the store does not have (a stale link), and nodes outside the clusters."""
    if not len(options):
        return replace(f, clusters=(), nodes=(), models=())
    clusters = tuple(c for c in f.clusters if c in set(options["cluster"].dropna()))
    in_clusters = options[options["cluster"].isin(clusters)] if clusters else options
    nodes = tuple(n for n in f.nodes if n in set(in_clusters["node"].dropna()))
    models = tuple(m for m in f.models if m in set(options["model"].dropna()))
    return replace(f, clusters=clusters, nodes=nodes, models=models)


# -- Streamlit ----------------------------------------------------------------------------------


def _url_query() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in QUERY_KEYS if st.query_params.get_all(k)}


def _load(f: Filters) -> None:
    state = st.session_state
    state[_STATE["range"]] = f.range
    state[_STATE["dates"]] = (f.start_date, f.end_date) if f.start_date and f.end_date else _default_dates()
    state[_STATE["cluster"]] = list(f.clusters)
    state[_STATE["node"]] = list(f.nodes)
    state[_STATE["model"]] = list(f.models)


def _default_dates() -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.timezone.utc).date()
    return today - dt.timedelta(days=1), today


def current() -> Filters:
    """The filters as the sidebar controls hold them (defaults before ``render`` ran)."""
    state = st.session_state
    dates: Sequence[dt.date] = state.get(_STATE["dates"]) or ()
    rng = state.get(_STATE["range"], DEFAULT_RANGE)
    start, end = (dates[0], dates[-1]) if rng == "custom" and len(dates) else (None, None)
    return Filters(rng, start, end, tuple(state.get(_STATE["cluster"], ())), tuple(state.get(_STATE["node"], ())),
                   tuple(state.get(_STATE["model"], ())))


def set_nodes(nodes: Sequence[str]) -> None:
    """Change the node filter (from a page's own selector); call from a widget callback."""
    st.session_state[_STATE["node"]] = list(nodes)


def query(f: Filters | None = None, **extra: str) -> dict[str, list[str] | str]:
    """Query parameters for a link that keeps the current view (plus ``extra``)."""
    q: dict[str, list[str] | str] = dict((f or current()).to_query())
    q.update(extra)
    return q


def render(options: pd.DataFrame) -> Filters:
    """Draw the shared controls in the sidebar and keep the URL in step with them.

    ``options`` has columns cluster, node, model: what the store holds."""
    state = st.session_state
    url = _url_query()
    if _WRITTEN not in state or (url and url != state[_WRITTEN]):
        _load(sanitize(Filters.from_query(url), options))  # a new session, or a link changed the URL
    else:
        _load(sanitize(current(), options))
    side = st.sidebar
    side.selectbox("Time range", list(RANGE_LABELS), format_func=RANGE_LABELS.__getitem__, key=_STATE["range"])
    if state[_STATE["range"]] == "custom":
        side.date_input("From, to (UTC)", key=_STATE["dates"])
    clusters = sorted(options["cluster"].dropna().unique()) if len(options) else []
    side.multiselect("Cluster", clusters, key=_STATE["cluster"], placeholder="All clusters")
    chosen = state[_STATE["cluster"]]
    nodes = options[options["cluster"].isin(chosen)] if chosen else options
    side.multiselect("Node", sorted(nodes["node"].dropna().unique()) if len(nodes) else [], key=_STATE["node"],
                     placeholder="All nodes")
    models = sorted(options["model"].dropna().unique()) if len(options) else []
    side.multiselect("GPU model", models, key=_STATE["model"], placeholder="All models")
    f = current()
    wanted = f.to_query()
    if _url_query() != wanted:
        for key in QUERY_KEYS:
            if key in wanted:
                st.query_params[key] = wanted[key]
            elif key in st.query_params:
                del st.query_params[key]
    state[_WRITTEN] = wanted
    return f
