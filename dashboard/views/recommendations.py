"""Recommendations: what to drain, reset, reclaim, resize, rebalance or share now, each with its evidence,
its expected gain and a link to the page that shows the evidence; operators acknowledge them (audited).
The list is ``planner.recommend.recommend``, the one `gpufleet plan recommend` prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import auth, charts, data, navigation, ui
from planner.recommend import KINDS, SEVERITIES, Recommendation, acknowledge

CAPTION = (
    "Each recommendation says what it rests on (**evidence**), what acting on it is expected to win (**gain**: "
    "GPU-hours over the look-back, or GPUs) and what to do. Kinds: **drain**/**reset** (health and XID actions), "
    "**idle** (GPUs held at under 5% utilization), **rightsize** (jobs using under 30% of their GPUs), **quota** "
    "(partitions starved while others idle), **sharing** (requests for part of a GPU), **straggler** (benchmarks)."
)
LOOKBACK_DAYS = (1, 7, 30)
MAX_DETAILS = 25
PAGES = {"node": navigation.NODE, "benchmarks": navigation.BENCHMARKS, "failures": navigation.FAILURES,
         "capacity": navigation.CAPACITY}


def table(recs: Sequence[Recommendation]) -> pd.DataFrame:
    """The recommendations as the page lists them (already most severe, largest gain first)."""
    return pd.DataFrame({
        "severity": [r.severity for r in recs], "kind": [r.kind for r in recs], "target": [r.target for r in recs],
        "title": [r.title for r in recs], "gain": [r.gain for r in recs], "unit": [r.gain_unit for r in recs],
        "action": [r.action for r in recs],
        "acknowledged": [f"{r.acknowledged_by} ({ui.when(r.acknowledged_at)})" if r.acknowledged_by else None
                         for r in recs],
        "id": [r.id for r in recs],
    }, columns=["severity", "kind", "target", "title", "gain", "unit", "action", "acknowledged", "id"])


def select(recs: Sequence[Recommendation], kinds: Sequence[str], severities: Sequence[str], nodes: Sequence[str],
           show_acknowledged: bool) -> list[Recommendation]:
    """The recommendations that pass the page's filters (an empty filter passes everything)."""
    return [r for r in recs if (not kinds or r.kind in kinds) and (not severities or r.severity in severities)
            and (not nodes or r.node in nodes) and (show_acknowledged or r.acknowledged_by is None)]


def evidence_table(rec: Recommendation) -> pd.DataFrame:
    def text(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}"
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    return pd.DataFrame({"evidence": list(rec.evidence), "value": [text(v) for v in rec.evidence.values()]})


def evidence_link(view: ui.View, rec: Recommendation) -> None:
    """A link to the page that shows this recommendation's evidence, filtered to its node."""
    page = PAGES.get(rec.page, navigation.NODE)
    if page is navigation.NODE and rec.node:
        ui.node_link(view, rec.node, f"Evidence: {rec.node} on the Node page", gpu=rec.gpu)
        return
    q: dict[str, list[str] | str] = dict((replace(view.filters, nodes=(rec.node,)) if rec.node else view.filters)
                                         .to_query())
    if page is not navigation.CAPACITY:
        q["range"] = "7d"
    st.page_link(page.path, label=f"Evidence: the {page.title} page" + (f" for {rec.node}" if rec.node else ""),
                 icon=":material/arrow_forward:", query_params=q)


def ack_form(view: ui.View, rec: Recommendation) -> None:
    """Operators acknowledge a recommendation here; the try is audited (``auth.audited``)."""
    with st.form(f"ack_form_{rec.id}", clear_on_submit=True):
        note = st.text_input("Note", key=f"ack_note_{rec.id}", placeholder="who is on it, ticket")
        clicked = st.form_submit_button("Acknowledge", icon=":material/task_alt:", key=f"ack_{rec.id}")
    if not clicked:
        return
    user = auth.current_user()
    try:
        with auth.audited("recommendation.ack", f"{rec.kind} {rec.target}", {"id": rec.id, "note": note}) as act:
            acknowledge(data.engine(view.url), rec, user.actor if user else "anonymous", note or None)
            act.message = f"acknowledged {rec.id}"
    except PermissionError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    data.recommendations.clear()
    st.success(f"Acknowledged: {rec.title}", icon=":material/check:")


def details(view: ui.View, recs: Sequence[Recommendation], chosen: str | None) -> None:
    can_act = auth.can_act()
    shown = sorted(recs[:MAX_DETAILS], key=lambda r: r.id != chosen)
    for rec in shown:
        done = " · acknowledged" if rec.acknowledged_by else ""
        with st.expander(f"[{rec.severity}] {rec.title}{done}", expanded=rec.id == chosen):
            st.markdown(f"**Action**: {rec.action}")
            st.markdown(f"**Expected gain**: {rec.gain:,.2f} {rec.gain_unit} · id `{rec.id}`")
            st.dataframe(evidence_table(rec), hide_index=True)
            evidence_link(view, rec)
            st.page_link(navigation.RECOMMENDATIONS.path, label="Link to this recommendation", icon=":material/link:",
                         query_params={"rec": rec.id})
            if rec.acknowledged_by:
                st.caption(f"Acknowledged by {rec.acknowledged_by} at {ui.when(rec.acknowledged_at)}"
                           + (f": {rec.note}" if rec.note else ""))
            elif can_act:
                ack_form(view, rec)
    if len(recs) > MAX_DETAILS:
        st.caption(f"Details of the first {MAX_DETAILS}; filter to see the others.")


def main() -> None:
    view = ui.page_start("Recommendations", CAPTION)
    if view is None:
        return
    days = st.selectbox("Look back", LOOKBACK_DAYS, index=1, format_func=lambda d: f"{d} day{'s' * (d > 1)}",
                        key="rec_days")
    recs = data.recommendations(view.url, view.now, days * 86400.0)
    if view.scope:
        nodes_in_scope = data.scope_nodes(view.url, view.scope)
        recs = [r for r in recs if r.node is None or r.node in nodes_in_scope]
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    kinds = c1.multiselect("Kind", KINDS, key="rec_kind")
    severities = c2.multiselect("Severity", SEVERITIES, key="rec_severity")
    nodes = c3.multiselect("Node", sorted({r.node for r in recs if r.node}), key="rec_node")
    show_acked = c4.checkbox("Acknowledged too", value=True, key="rec_acked")
    chosen = st.query_params.get("rec")
    listed = select(recs, kinds, severities, nodes, show_acked)
    cols = st.columns(4)
    for col, severity in zip(cols, SEVERITIES, strict=False):
        col.metric(severity.capitalize(), sum(1 for r in listed if r.severity == severity))
    cols[3].metric("GPU-hours to reclaim", f"{sum(r.gain for r in listed if r.gain_unit == 'GPU-hours'):,.1f}")
    st.plotly_chart(charts.recommendation_counts(pd.DataFrame({"kind": [r.kind for r in listed],
                                                               "severity": [r.severity for r in listed]})),
                    key="rec_counts")
    st.caption(f"{len(listed)} of {len(recs)} recommendations over the {days} days to {ui.when(view.now)}; the same "
               f"list as `gpufleet plan recommend --db URL --window-days {days}`.")
    if not listed:
        ui.nothing("Nothing to recommend for this selection.")
        return
    st.dataframe(table(listed), hide_index=True, column_config={"gain": st.column_config.NumberColumn(format="%.2f")})
    details(view, listed, chosen)


main()
