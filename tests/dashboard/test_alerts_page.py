"""The Alerts page through the real router: a store with alerts in every state, silences, notifications
delivered / retrying / pending / failed with their attempts, and health as the controller judges it.

Headline numbers are checked against plain SQL over the same store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from db.engine import make_engine
from tests.dashboard import seed
from tests.dashboard.test_app import figure, metrics, page, values

ALERTS = "views/alerts.py"
SIX_HOURS = 6 * 3600
HEALTH_STATES = ("healthy", "degraded", "unknown", "unhealthy")


@pytest.fixture(scope="module")
def alerting_url(seeded_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the seeded store (the shared one stays as it is) with the controller's tables filled."""
    path = Path(seeded_url.removeprefix("sqlite:///"))
    copy = tmp_path_factory.mktemp("alerts") / "alerting.db"
    shutil.copy(path, copy)
    url = f"sqlite:///{copy}"
    engine = make_engine(url)
    seed.seed_alerting(engine)
    engine.dispose()
    return url


@pytest.fixture
def alerting(alerting_url: str, use_store: Callable[[str], None]) -> str:
    use_store(alerting_url)
    return alerting_url


def _json(value: Any) -> Any:
    """A JSON column as SQLite (text) or PostgreSQL (parsed) returns it."""
    return json.loads(value) if isinstance(value, str) else value


def expected_headline(url: str, nodes: tuple[str, ...] = ()) -> dict[str, str]:
    """The page's headline read straight from the store (6-hour range ending at ``seed.NOW``)."""
    start = seed.NOW - SIX_HOURS
    engine = create_engine(url)
    with engine.connect() as conn:
        alerts = conn.execute(text("""
            SELECT a.state, a.labels, a.ends_at, n.name FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id
            WHERE a.state != 'resolved' OR (a.ends_at >= :start AND a.ends_at < :now)
        """), {"start": start, "now": seed.NOW}).all()
        active_silences = conn.execute(text(
            "SELECT COUNT(*) FROM silences WHERE starts_at <= :now AND ends_at > :now"), {"now": seed.NOW}).scalar()
        notes = conn.execute(text("""
            SELECT state, payload FROM notifications
            WHERE (created_at >= :start AND created_at < :now) OR state IN ('pending', 'delivering')
               OR EXISTS (SELECT 1 FROM delivery_attempts d WHERE d.notification_id = notifications.id
                          AND d.ts >= :start AND d.ts < :now)
        """), {"start": start, "now": seed.NOW}).all()
    engine.dispose()
    alerts = [a for a in alerts if not nodes or a.name in nodes]
    notes = [n for n in notes if not nodes or {a["labels"].get("node") for a in _json(n.payload)["alerts"]}
             & set(nodes)]

    def firing(severity: str) -> str:
        return str(sum(1 for a in alerts if a.state == "firing" and _json(a.labels)["severity"] == severity))

    return {
        "Firing, critical": firing("critical"), "Firing, warning": firing("warning"), "Firing, info": firing("info"),
        "Pending": str(sum(1 for a in alerts if a.state == "pending")),
        "Resolved in range": str(sum(1 for a in alerts if a.state == "resolved")),
        "Active silences": str(active_silences),
        "Notifications pending": str(sum(1 for n in notes if n.state in ("pending", "delivering"))),
        "Notifications failed": str(sum(1 for n in notes if n.state == "failed")),
    }


def frame_with(at: Any, *columns: str) -> pd.DataFrame:
    found = [df.value for df in at.dataframe if set(columns) <= set(df.value.columns)]
    assert found, f"no table with {columns} in {[list(df.value.columns) for df in at.dataframe]}"
    return found[0]


def styles_of(at: Any, *columns: str) -> str:
    """The CSS the Styler sent for the first table with these columns."""
    for el in at.dataframe:
        if set(columns) <= set(el.value.columns):
            return str(el.proto.arrow_data.styler.styles)
    raise AssertionError(columns)


def test_headline_equals_sql(alerting: str) -> None:
    at = page(ALERTS)
    want = expected_headline(alerting)
    got = metrics(at)
    assert {k: got[k] for k in want} == want
    # What the seed was built to show, so that a wrong seed cannot make both sides agree.
    assert want == {"Firing, critical": "1", "Firing, warning": "3", "Firing, info": "1", "Pending": "1",
                    "Resolved in range": "1", "Active silences": "1", "Notifications pending": "2",
                    "Notifications failed": "1"}
    assert not any("gpufleet controller run" in i.value for i in at.info)


def test_firing_and_pending_alerts_with_actions_silences_and_links(alerting: str) -> None:
    at = page(ALERTS)
    active = frame_with(at, "severity", "state", "rule", "recommended action")
    assert active["state"].tolist() == ["firing"] * 5 + ["pending"]
    assert active["severity"].tolist()[:4] == ["critical", "warning", "warning", "warning"]
    lost = active[active["rule"] == "gpu_lost"].iloc[0]
    assert (lost["node"], lost["GPU"]) == ("node-c", 0)
    assert lost["recommended action"] == seed.classify(79).recommended_action
    hot = active[(active["rule"] == "gpu_temperature_high") & (active["state"] == "firing")]
    assert hot["silenced by"].tolist() == ["#1", "#1"] and sorted(hot["GPU"]) == [1, 2]
    node_alert = active[active["rule"] == "node_filesystem_full"].iloc[0]
    assert node_alert["node"] == "node-a" and pd.isna(node_alert["GPU"])
    links = {el.proto.query_string for el in at.get("page_link") if el.proto.page == "node"}
    assert {"node=node-a", "node=node-b", "node=node-c"} <= links
    resolved = frame_with(at, "fired", "resolved")
    assert resolved["rule"].tolist() == ["gpu_xid"]  # gpu_ecc_errors resolved two days ago


def test_silences_are_listed(alerting: str) -> None:
    at = page(ALERTS)
    silences = frame_with(at, "matchers", "until", "by", "comment")
    assert silences["state"].tolist() == ["active", "expired"]  # the one that expired days ago is left out
    active = silences.iloc[0]
    assert active["matchers"] == 'node="node-b", alertname="gpu_temperature_high"'
    assert (active["by"], active["comment"]) == ("ops@example.com", "fan swap on node-b")


def test_failed_delivery_is_shown_as_failed(alerting: str) -> None:
    at = page(ALERTS)
    notes = frame_with(at, "receiver", "state", "last error")
    by_receiver = notes.set_index(["receiver", "state"])
    failed = by_receiver.loc[("slack", "failed")]
    assert failed["attempts"] == 3 and failed["last error"] == "HTTP 500 (gave up: attempts)"
    retrying = notes[notes["retrying"]]
    assert retrying["last error"].tolist() == ["connection refused"]
    assert len(notes) == 4  # the delivered notification of two days ago is out of the range
    css = styles_of(at, "receiver", "state", "last error")
    assert "#ffcdd2" in css and "#ffe0b2" in css  # failed in red, retrying in orange
    tries = frame_with(at, "outcome", "HTTP status")
    assert sorted(tries["outcome"]) == ["delivered", "error, gave up"] + ["error, retried"] * 3
    chart = figure(at, "Delivery attempts")
    totals = {t["name"]: sum(values(t["y"])) for t in chart["data"]}
    assert totals == {"delivered": 1, "error, retried": 3, "error, gave up": 1}


def test_health_counts_equal_sql_and_list_the_unhealthy(alerting: str) -> None:
    engine = create_engine(alerting)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT entity, state, COUNT(*) FROM health_states GROUP BY entity, state")).all()
    engine.dispose()
    counts = {(e, s): n for e, s, n in rows}
    got = metrics(page(ALERTS))
    for entity, label in (("gpu", "GPUs"), ("node", "Nodes")):
        for state in HEALTH_STATES:
            assert got[f"{label} {state}"] == str(counts.get((entity, state), 0))
    assert counts[("gpu", "unhealthy")] >= 1 and counts[("node", "unhealthy")] >= 1
    at = page(ALERTS)
    unhealthy = frame_with(at, "what", "reasons", "recommended action")
    assert "healthy" not in set(unhealthy["state"])
    lost = unhealthy.set_index("what").loc["node-c / GPU 0"]
    assert lost["state"] == "unhealthy" and "GPU lost" in lost["reasons"]
    assert lost["recommended action"]


@pytest.mark.parametrize(("query", "nodes"), [
    ({"node": "node-b"}, ("node-b",)),
    ({"node": "node-a"}, ("node-a",)),
    ({"cluster": "beta"}, ("node-c",)),
])
def test_filters_narrow_the_alerts(alerting: str, query: dict[str, Any], nodes: tuple[str, ...]) -> None:
    at = page(ALERTS, query)
    want = expected_headline(alerting, nodes)
    assert {k: metrics(at)[k] for k in want} == want
    active = frame_with(at, "severity", "state", "rule")
    assert set(active["node"]) == set(nodes)
    health = frame_with(at, "what", "reasons") if any("what" in df.value.columns for df in at.dataframe) else None
    if health is not None:
        assert {w.split(" / ")[0] for w in health["what"]} <= set(nodes)


def test_node_b_filter(alerting: str) -> None:
    got = metrics(page(ALERTS, {"node": "node-b"}))
    assert (got["Firing, critical"], got["Firing, warning"], got["Pending"], got["Notifications pending"],
            got["Notifications failed"]) == ("0", "2", "1", "1", "0")


def test_a_selection_with_nothing_explains_itself(alerting: str) -> None:
    at = page(ALERTS, {"cluster": "alpha", "model": seed.A100})  # alpha has no A100
    assert not at.get("plotly_chart")
    assert any(c.value.startswith(":material/info:") for c in at.caption)


def test_longer_range_counts_older_resolved_alerts(alerting: str) -> None:
    at = page(ALERTS, {"range": "7d"})
    assert metrics(at)["Resolved in range"] == "2"
    assert sorted(frame_with(at, "fired", "resolved")["rule"]) == ["gpu_ecc_errors", "gpu_xid"]


def test_store_without_controller_explains_and_still_draws(seeded_url: str, use_store: Callable[[str], None]) -> None:
    use_store(seeded_url)
    at = page(ALERTS)
    infos = " ".join(i.value for i in at.info)
    assert "gpufleet controller run --config FILE" in infos
    assert metrics(at)["Firing, critical"] == "0"
    assert figure(at, "Delivery attempts")  # the browser test wants a chart on every page


def test_empty_store_explains(empty_url: str, use_store: Callable[[str], None]) -> None:
    use_store(empty_url)
    at = page(ALERTS)
    infos = " ".join(i.value for i in at.info)
    assert "gpufleet demo" in infos and "gpufleet controller run --config FILE" in infos
    assert not at.get("plotly_chart") and not at.metric


def test_alerts_page_on_postgresql(pg_url: str, use_store: Callable[[str], None]) -> None:
    engine = seed.seed(pg_url)
    seed.seed_alerting(engine)
    engine.dispose()
    use_store(pg_url)
    at = page(ALERTS)
    want = expected_headline(pg_url)
    assert {k: metrics(at)[k] for k in want} == want
    assert metrics(page(ALERTS, {"node": "node-b"}))["Firing, warning"] == "2"
