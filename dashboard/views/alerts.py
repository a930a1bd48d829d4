"""Alerts: what fires (and is pending) now, what resolved in the range, silences, the webhook
delivery log with its failures, and GPU / node health as the alerting controller judged it."""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import streamlit as st

from alerts.health import STATES as HEALTH_STATES
from alerts.rules import parse_duration
from alerts.silences import create_silence, expire_silence
from dashboard import analysis, auth, charts, data, ui
from dashboard import definitions as d
from db.alertviews import UNFINISHED
from db.readmodels import RAW, bucket_for

SEVERITIES = ("critical", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_NODE_LINKS = 12
STALE_HEALTH_SECONDS = 300.0

CAPTION = (
    "The alerting controller (`gpufleet controller run`) evaluates the alert rules over the store, keeps "
    "each GPU's and node's health, and delivers notifications to the configured receivers. An alert is "
    "**pending** while its condition holds for less than the rule's `for`, then **firing**, then **resolved**."
)
CONTROLLER_HINT = (
    "Nothing from the alerting controller in this store yet: no alerts, no health, no notifications. The "
    "controller evaluates the alert rules, keeps GPU and node health and delivers webhooks; run one next to "
    "the store with `gpufleet controller run --config FILE --db URL` (`--once` for a single cycle; without "
    "`--config` it uses the default rules and delivers nowhere). Silences: "
    "`gpufleet alerts silence node=NAME --duration 2h --comment WHY`."
)
SCOPE_CAPTION = (
    "Alerts and health follow the filters (an alert about a GPU by its GPU, one about a node by its node); "
    "notifications are shown when they carry an alert of a node in the selection. Silences apply to the "
    "whole fleet, by their label matchers."
)

FAILED = "background-color: #ffcdd2; color: #b71c1c"
RETRYING = "background-color: #ffe0b2; color: #e65100"
STATE_STYLES = {"unhealthy": FAILED, "degraded": RETRYING, "unknown": "background-color: #eceff1; color: #37474f",
                "critical": FAILED, "warning": RETRYING}


# -- pure helpers -------------------------------------------------------------------------------


def headline(counts: pd.DataFrame, silences: pd.DataFrame, notes: pd.DataFrame) -> dict[str, int]:
    """The page's headline numbers from the alert counts, silences and delivery log."""
    def count(state: str, severity: str | None = None) -> int:
        hit = counts["state"] == state
        if severity is not None:
            hit &= counts["severity"] == severity
        return int(counts.loc[hit, "count"].sum())

    out = {f"Firing, {s}": count("firing", s) for s in SEVERITIES}
    out.update({"Pending": count("pending"), "Resolved in range": count("resolved"),
                "Active silences": int((silences["state"] == "active").sum()),
                "Notifications pending": int(notes["state"].isin(UNFINISHED).sum()),
                "Notifications failed": int((notes["state"] == "failed").sum())})
    return out


def _time(seconds: pd.Series) -> pd.Series:
    """Epoch seconds as UTC timestamps to the second (what the tables show)."""
    return analysis.to_time(seconds).dt.round("s")


def _index(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype("Int64")


def active_table(alerts: pd.DataFrame) -> pd.DataFrame:
    """Firing then pending alerts, most severe and newest first, as the page shows them."""
    df = alerts[alerts["state"] != "resolved"]
    df = df.assign(_state=(df["state"] != "firing").astype(int),
                   _sev=[SEVERITY_RANK.get(s, len(SEVERITIES)) for s in df["severity"]])
    df = df.sort_values(["_state", "_sev", "since"], ascending=[True, True, False], kind="stable")
    return pd.DataFrame({
        "severity": df["severity"], "state": df["state"], "rule": df["rule"], "node": df["node"],
        "GPU": _index(df["gpu"]), "summary": df["summary"], "since": _time(df["since"]),
        "recommended action": df["action"], "silenced by": df["silenced_by"],
    }).reset_index(drop=True)


def resolved_table(alerts: pd.DataFrame) -> pd.DataFrame:
    df = alerts[alerts["state"] == "resolved"].sort_values("ends_at", ascending=False, kind="stable")
    fired = df["starts_at"].fillna(df["active_since"])
    return pd.DataFrame({
        "severity": df["severity"], "rule": df["rule"], "node": df["node"], "GPU": _index(df["gpu"]),
        "summary": df["summary"], "fired": _time(fired), "resolved": _time(df["ends_at"]),
        "lasted (min)": ((df["ends_at"] - fired) / 60).round(1),
    }).reset_index(drop=True)


def silence_table(silences: pd.DataFrame) -> pd.DataFrame:
    order = {"active": 0, "pending": 1, "expired": 2}
    df = silences.assign(_o=[order.get(s, 3) for s in silences["state"]]).sort_values(
        ["_o", "ends_at"], ascending=[True, False], kind="stable")
    return pd.DataFrame({
        "id": df["id"], "state": df["state"], "matchers": df["matchers"], "from": _time(df["starts_at"]),
        "until": _time(df["ends_at"]), "by": df["created_by"], "comment": df["comment"],
    }).reset_index(drop=True)


def notification_table(notes: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "id": notes["id"], "receiver": notes["receiver"], "group": notes["group"].fillna(notes["group_key"]),
        "status": notes["status"], "state": notes["state"], "retrying": notes["retrying"].astype(bool),
        "attempts": notes["attempts"], "alerts": notes["alerts"], "alert names": notes["alertnames"],
        "created": _time(notes["created_at"]), "delivered": _time(notes["delivered_at"]),
        "next attempt": _time(notes["next_attempt_at"].where(notes["state"].isin(UNFINISHED))),
        "last error": notes["last_error"],
    }).reset_index(drop=True)


def attempt_outcomes(tries: pd.DataFrame) -> pd.Series:
    """Per attempt: delivered; error, gave up (the last attempt of a failed notification); or
    error, retried (the outbox tried or will try again)."""
    last = tries.groupby("notification_id")["ts"].transform("max") == tries["ts"] if len(tries) else tries["ts"]
    gave_up = (tries["notification_state"] == "failed") & last.astype(bool)
    out = pd.Series("error, retried", index=tries.index, dtype=object)
    out[gave_up] = "error, gave up"
    out[tries["ok"].astype(bool)] = "delivered"
    return out


def attempt_table(tries: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "time": _time(tries["ts"]), "receiver": tries["receiver"], "notification": tries["notification_id"],
        "outcome": attempt_outcomes(tries), "HTTP status": tries["http_status"].astype("Int64"),
        "latency (s)": tries["latency_seconds"], "error": tries["error"], "controller": tries["controller"],
    }).reset_index(drop=True)


def attempt_buckets(tries: pd.DataFrame, start: float, end: float) -> tuple[pd.DataFrame, int]:
    """Attempts per (bucket, outcome) over [start, end), and the bucket size in seconds."""
    step = bucket_for(end - start, RAW)
    if not len(tries):
        return pd.DataFrame(columns=["time", "outcome", "attempts"]), step
    df = pd.DataFrame({"bucket": (tries["ts"] // step) * step, "outcome": attempt_outcomes(tries)})
    out = df.groupby(["bucket", "outcome"]).size().rename("attempts").reset_index()
    return out.assign(time=_time(out["bucket"]))[["time", "outcome", "attempts"]], step


def health_table(health: pd.DataFrame) -> pd.DataFrame:
    """GPUs and nodes that are not healthy, worst first."""
    df = health[health["state"] != "healthy"]
    what = [str(n) if e == "node" else analysis.gpu_label(n, g)
            for e, n, g in zip(df["entity"], df["node"], df["gpu"], strict=True)]
    return pd.DataFrame({
        "what": what, "entity": df["entity"], "state": df["state"], "reasons": df["reasons"],
        "recommended action": df["recommended_action"], "since": _time(df["since"]),
    }).reset_index(drop=True)


def _styled(table: pd.DataFrame, style: Any) -> Any:
    """``table`` with each row's style from ``style(i)`` (an index into ``table``)."""
    return table.style.apply(lambda row: [style(row.name) or ""] * len(row), axis=1).format(precision=3, na_rep="")


# -- Streamlit ----------------------------------------------------------------------------------


def _node_links(view: ui.View, nodes: pd.Series, noun: str | None = None) -> None:
    """Links to the node pages of ``nodes``, with how many rows each has (``noun``: what a row is)."""
    counts = nodes.dropna().value_counts()
    if not len(counts):
        return
    shown = counts.sort_index().head(MAX_NODE_LINKS)
    cols = st.columns(min(4, len(shown)))
    for i, (node, n) in enumerate(shown.items()):
        with cols[i % len(cols)]:
            ui.node_link(view, str(node), f"{node} ({n} {noun}{'' if n == 1 else 's'})" if noun else str(node))
    if len(counts) > MAX_NODE_LINKS:
        st.caption(f"… and {len(counts) - MAX_NODE_LINKS} more nodes; filter by cluster or node to see them.")


def _at(view: ui.View) -> float:
    return data.now() if view.filters.range != "custom" else view.end


@st.fragment(run_every=d.LIVE_REFRESH_SECONDS)
def live_alerts(view: ui.View) -> None:
    """Headline numbers and the pending and firing alerts, refreshed on their own."""
    at = _at(view)
    counts = data.alert_counts(view.url, view.scope, view.start, at)
    silences = data.silences(view.url, view.start, at)
    notes, _tries = data.deliveries(view.url, view.scope, view.start, at)
    h = headline(counts, silences, notes)
    row1, row2 = st.columns(4), st.columns(4)
    for col, label in zip([*row1, *row2], h, strict=True):
        col.metric(label, h[label], help=_HELP.get(label))
    st.caption(f"Live: as of {ui.when(at)}, refreshed every {d.LIVE_REFRESH_SECONDS} s. {SCOPE_CAPTION}")

    st.subheader("Firing and pending")
    alerts = data.alerts(view.url, view.scope, view.start, at, at)
    table = active_table(alerts)
    if not len(table):
        ui.nothing("No alert is firing or pending" + (" in this selection." if view.scope else "."))
        return
    st.dataframe(_styled(table, lambda i: STATE_STYLES.get(table.at[i, "severity"])
                         if table.at[i, "state"] == "firing" else None), hide_index=True)
    st.caption("Pending and firing alerts are the controller's current state, whatever the time range. "
               "**silenced by**: the active silences that mute the alert's notifications.")
    _node_links(view, table["node"], "alert")


_HELP = {
    "Pending": "Conditions that hold but not yet for the rule's `for`.",
    "Resolved in range": "Alerts whose condition cleared in the time range.",
    "Active silences": "Silences in effect now (`gpufleet alerts silence --list`).",
    "Notifications pending": "Waiting for delivery or retrying after a failed attempt (the outbox backs off).",
    "Notifications failed": "Given up on (a permanent error, too many attempts or too old), in the range.",
}


def resolved(view: ui.View, alerts: pd.DataFrame) -> None:
    st.subheader("Resolved in the range")
    table = resolved_table(alerts)
    if len(table):
        st.dataframe(table, hide_index=True)
    else:
        ui.nothing("No alert resolved in this range.")


def silence_controls(view: ui.View) -> None:
    """Operators create and expire silences here, as with ``gpufleet alerts silence``; each try goes to the
    audit log (``auth.audited``). Viewers never get here."""
    user = auth.current_user()
    with st.expander("Silence alerts, or expire a silence", icon=":material/notifications_off:"):
        with st.form("silence_new", clear_on_submit=True):
            c1, c2, c3 = st.columns([3, 1, 3])
            text = c1.text_input("Matchers", placeholder='node=node-03 alertname=~"gpu_xid.*"', key="silence_matchers")
            duration = c2.text_input("Duration", value="2h", key="silence_duration")
            comment = c3.text_input("Comment", placeholder="why", key="silence_comment")
            create = st.form_submit_button("Silence", icon=":material/notifications_off:", key="silence_create")
        current = data.silences(view.url, view.start, view.end)
        active = current[current["state"] != "expired"]
        expire = None
        if len(active):
            with st.form("silence_expire"):
                labels = {int(r.id): f"{r.id}: {r.matchers} (until {ui.when(r.ends_at)})" for r in active.itertuples()}
                expire = st.selectbox("Active or pending silence", list(labels), format_func=labels.__getitem__,
                                      key="silence_pick")
                if not st.form_submit_button("Expire", icon=":material/alarm_off:", key="silence_expire_now"):
                    expire = None
    try:
        if create:
            matchers = shlex.split(text)
            with auth.audited("silence.create", " ".join(matchers), {"duration": duration, "comment": comment}) as act:
                sid = create_silence(data.engine(view.url), matchers, parse_duration(duration), comment or None,
                                     user.actor if user else None)
                act.details["silence_id"] = sid
                act.message = f"silence {sid} created for {duration}"
        elif expire is not None:
            with auth.audited("silence.expire", f"silence {expire}") as act:
                if not expire_silence(data.engine(view.url), expire):
                    raise ValueError(f"silence {expire} had already expired")
                act.message = f"silence {expire} expired"
        else:
            return
    except (ValueError, PermissionError) as exc:
        st.error(str(exc), icon=":material/error:")
        return
    data.silences.clear()
    st.success(act.message or "done", icon=":material/check:")


def silences(view: ui.View) -> None:
    st.subheader("Silences")
    if auth.can_act():
        silence_controls(view)
    table = silence_table(data.silences(view.url, view.start, view.end))
    if len(table):
        st.dataframe(table, hide_index=True)
    else:
        ui.nothing("No active silence, and none expired in this range.")
    st.caption("Active and pending silences, and those that expired in the range. Operators create and expire "
               "them here or with `gpufleet alerts silence` (`--list`, `--expire ID`); each change is in the audit "
               "log.")


def deliveries(view: ui.View) -> None:
    st.subheader("Delivery log")
    notes, tries = data.deliveries(view.url, view.scope, view.start, view.end)
    buckets, step = attempt_buckets(tries, view.start, view.end)
    st.plotly_chart(charts.delivery_attempts(buckets, (view.start, view.end), step), key="delivery_attempts")
    if len(notes):
        table = notification_table(notes)
        st.dataframe(_styled(table, lambda i: FAILED if table.at[i, "state"] == "failed"
                             else RETRYING if table.at[i, "retrying"] else None), hide_index=True)
        st.caption("Notifications created in the range, not yet delivered, or tried in the range, newest first. "
                   "**Failed** rows (red) were given up on; **retrying** rows (orange) failed an attempt and wait "
                   "for the next one.")
    else:
        ui.nothing("No notification in this range.")
    if len(tries):
        with st.expander(f"Delivery attempts in the range ({len(tries)})", expanded=not tries["ok"].all()):
            table = attempt_table(tries)
            st.dataframe(_styled(table, lambda i: None if table.at[i, "outcome"] == "delivered" else FAILED),
                         hide_index=True)


@st.fragment(run_every=d.LIVE_REFRESH_SECONDS)
def live_health(view: ui.View) -> None:
    """Health per state and the GPUs and nodes that are not healthy, refreshed on their own."""
    st.subheader("GPU and node health")
    health = data.health(view.url, view.scope)
    if not len(health):
        ui.nothing("No health stored for this selection: the controller writes it every cycle.")
        return
    for entity, label in (("gpu", "GPUs"), ("node", "Nodes")):
        states = health.loc[health["entity"] == entity, "state"]
        for col, state in zip(st.columns(len(HEALTH_STATES)), HEALTH_STATES, strict=True):
            col.metric(f"{label} {state}", int((states == state).sum()))
    updated = data.alerting_activity(view.url)["health_updated"]
    age = _at(view) - updated if updated is not None else None
    if age is not None and age > STALE_HEALTH_SECONDS:
        st.warning(f"Health was last judged {age / 60:,.0f} minutes ago ({ui.when(updated)}): is the controller "
                   "running?", icon=":material/schedule:")
    st.caption(f"As the controller judged it at {ui.when(updated)}. **unhealthy**: a firing critical alert, an "
               "unrecovered fatal event, a lost GPU or a failed row remap; **unknown**: no recent data or its node "
               "is down; **degraded**: a firing warning alert, an NVML error, thermal throttling or a pending row "
               "remap. A node is the worst of its GPUs and its own alerts.")
    table = health_table(health)
    if not len(table):
        ui.nothing("Every GPU and node in this selection is healthy.")
        return
    st.dataframe(_styled(table, lambda i: STATE_STYLES.get(table.at[i, "state"])), hide_index=True)
    _node_links(view, health.loc[health["state"] != "healthy", "node"].drop_duplicates())


def main() -> None:
    view = ui.page_start("Alerts", CAPTION)
    if view is None:
        st.info(CONTROLLER_HINT, icon=":material/notifications:")
        return
    if not data.alerting_ready(view.url):
        st.warning("This store has no alerting tables yet (run 'gpufleet db upgrade --db URL').")
        return
    if view.scope and not data.scope_nodes(view.url, view.scope):
        ui.nothing("No node matches this selection; clear a filter to see its alerts.")
        return
    activity = data.alerting_activity(view.url)
    if not (activity["alerts"] or activity["health"] or activity["notifications"]):
        st.info(CONTROLLER_HINT, icon=":material/notifications:")
    live_alerts(view)
    resolved(view, data.alerts(view.url, view.scope, view.start, view.end, view.end))
    silences(view)
    deliveries(view)
    live_health(view)


main()
