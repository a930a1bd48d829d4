"""What every page does first (title, store check, the view's window) and small display helpers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from dashboard import data, filters, navigation
from dashboard import definitions as d
from db.readmodels import Scope


@dataclass(frozen=True, slots=True)
class View:
    """What a page shows: the store, the filters and the resolved time window."""

    url: str
    filters: filters.Filters
    scope: Scope
    start: float
    end: float
    now: float


def page_start(title: str, caption: str | None = None) -> View | None:
    """Title the page and resolve the view; ``None`` (with an explanation shown) when the store is
    empty or unreadable."""
    st.title(title)
    if caption:
        st.caption(caption)
    url = data.store_url()
    status = data.store_status(url)
    if not status.ready:
        if status.problem:
            st.warning(status.problem)
        st.info(d.EMPTY_STORE, icon=":material/info:")
        return None
    f = filters.current()
    now = data.now()
    start, end = f.window(now)
    st.caption(f"Showing {f.describe()}: {when(start)} to {when(end)}.")
    return View(url, f, f.scope(), start, end, now)


def node_link(view: View, node: str, label: str, *, gpu: object = None, key_hint: str = "") -> None:
    """A link to the node page for ``node`` that keeps the view's other filters."""
    q: dict[str, list[str] | str] = dict(replace(view.filters, nodes=(node,)).to_query())
    if gpu is not None and pd.notna(gpu):
        q["gpu"] = str(int(gpu))  # type: ignore[call-overload]
    st.page_link(navigation.NODE.path, label=label, icon=":material/arrow_forward:", query_params=q)


def when(ts: object) -> str:
    if ts is None or pd.isna(ts):  # type: ignore[call-overload]
        return "never"
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[arg-type]


def hours(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:,.1f} h" if value < 1000 else f"{value:,.0f} h"


def percent(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.0%}"


def watts(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value / 1000:,.1f} kW" if value >= 1000 else f"{value:,.0f} W"


def nothing(message: str) -> None:
    st.caption(f":material/info: {message}")
