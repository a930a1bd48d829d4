"""Audit: every operator action and configuration change (who, when, through what, what on what, and how it
ended), newest first, filterable. Read-only: the log is insert-only, and nothing here edits or deletes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from dashboard import analysis, charts, data, filters, ui
from db import audit
from db.readmodels import RAW, bucket_for

CAPTION = (
    "Operator actions from the dashboard (silences, acknowledgements, benchmark runs, imports), the same "
    "actions from the command line (as the OS user who ran them) and configuration loads (the controller's "
    "alerting configuration and the dashboard's sign-in settings, recorded when they change, by their SHA-256; "
    "never a secret). The log is insert-only: nothing, here or in the store, edits or deletes an entry."
)
OUTCOME_STYLES = {audit.FAILED: "background-color: #ffcdd2; color: #b71c1c",
                  audit.DENIED: "background-color: #ffe0b2; color: #e65100"}


def entry_table(entries: Sequence[audit.Entry]) -> pd.DataFrame:
    """The entries as the page lists them (already newest first)."""
    return pd.DataFrame({
        "time": analysis.to_time(pd.Series([e.ts for e in entries], dtype=float)).dt.round("s"),
        "who": [e.actor for e in entries], "via": [e.source for e in entries],
        "action": [e.action for e in entries], "target": [e.target for e in entries],
        "outcome": [e.outcome for e in entries], "result": [e.message for e in entries],
        "details": [", ".join(f"{k}={v}" for k, v in e.details.items() if v is not None) for e in entries],
    })


def activity(entries: Sequence[audit.Entry], start: float, end: float) -> tuple[pd.DataFrame, int]:
    """Entries per (time bucket, outcome) over the range, and the bucket size in seconds."""
    step = bucket_for(end - start, RAW)
    if not entries:
        return pd.DataFrame(columns=["time", "outcome", "entries"]), step
    df = pd.DataFrame({"bucket": [(e.ts // step) * step for e in entries], "outcome": [e.outcome for e in entries]})
    out = df.groupby(["bucket", "outcome"]).size().rename("entries").reset_index()
    return out.assign(time=analysis.to_time(out["bucket"]))[["time", "outcome", "entries"]], step


def main() -> None:
    st.title("Audit")
    st.caption(CAPTION)
    url = data.store_url()
    status = data.store_status(url)
    if status.problem:
        st.warning(status.problem)
        return
    if not _has_log(url):
        st.info("This store has no audit log (yet): 'gpufleet db upgrade --db URL' creates it, as the agent and the "
                "controller do when they start.", icon=":material/info:")
        return
    engine = data.engine(url)
    f = filters.current()
    start, end = f.window(data.now())
    options = audit.choices(engine)
    c1, c2, c3, c4 = st.columns(4)
    actors = c1.multiselect("Who", options["actors"], key="audit_actor")
    actions = c2.multiselect("Action", options["actions"], key="audit_action")
    outcomes = c3.multiselect("Outcome", audit.OUTCOMES, key="audit_outcome")
    search = c4.text_input("Target or result contains", key="audit_search").strip()
    entries = audit.read(engine, start=start, end=end, actors=actors, actions=actions, outcomes=outcomes,
                         search=search or None)
    more = " (the newest shown; narrow the filters)" if len(entries) == audit.DEFAULT_LIMIT else ""
    st.caption(f"{len(entries)} entries{more}, {f.describe()}: {ui.when(start)} to {ui.when(end)}, newest first.")
    buckets, step = activity(entries, start, end)
    st.plotly_chart(charts.audit_activity(buckets, (start, end), step), key="audit_activity")
    if not entries:
        ui.nothing("No action or configuration change matches in this range.")
        return
    table = entry_table(entries)
    st.dataframe(table.style.apply(lambda row: [OUTCOME_STYLES.get(row["outcome"], "")] * len(row), axis=1),
                 hide_index=True)


def _has_log(url: str) -> bool:
    """Whether the store has the audit table, without creating a SQLite file that is not there."""
    return not data.store_file_missing(url) and data.has_tables(url, ("audit_log",))


main()
