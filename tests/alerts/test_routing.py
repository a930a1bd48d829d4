"""Routing: grouping, group_wait / group_interval / repeat_interval on an injected clock, resolved
notifications, silences, inhibition, the route tree, and enqueueing exactly once."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from alerts.config import parse_config
from alerts.payload import encode_webhook, format_time
from alerts.routing import route, route_pass, silences_signature
from alerts.silences import create_silence, expire_silence
from db.models import Notification, NotificationGroup
from tests.alerts.harness import T0, put_alert, store

CONFIG = """
route:
  receiver: ops
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - {name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}
"""

HOT_0 = {"alertname": "gpu_temperature_high", "node": "n1", "gpu": "0", "severity": "warning"}
HOT_1 = {"alertname": "gpu_temperature_high", "node": "n1", "gpu": "1", "severity": "warning"}
HOT_N2 = {"alertname": "gpu_temperature_high", "node": "n2", "gpu": "0", "severity": "warning"}


@pytest.fixture
def engine(sqlite_url: str):
    e = store(sqlite_url)
    yield e
    e.dispose()


def bodies(notes: list[Notification]) -> list[dict]:
    return [n.payload for n in notes]


def fired(body: dict) -> list[tuple[str, str]]:
    return [(a["labels"].get("gpu", ""), a["status"]) for a in body["alerts"]]


def test_group_wait_then_one_notification_per_group(engine) -> None:
    cfg = parse_config(CONFIG)
    for labels in (HOT_0, HOT_1, HOT_N2):
        put_alert(engine, labels)
    assert route(engine, cfg, T0) == []
    assert route(engine, cfg, T0 + 29) == []
    notes = route(engine, cfg, T0 + 30)
    assert [n.payload["groupKey"] for n in notes] == [
        '{}:{alertname="gpu_temperature_high", node="n1"}', '{}:{alertname="gpu_temperature_high", node="n2"}']
    n1 = notes[0].payload
    assert fired(n1) == [("0", "firing"), ("1", "firing")]
    assert n1["groupLabels"] == {"alertname": "gpu_temperature_high", "node": "n1"}
    assert n1["commonLabels"] == {"alertname": "gpu_temperature_high", "node": "n1", "severity": "warning"}
    assert n1["alerts"][0]["startsAt"] == format_time(T0) == "2027-01-15T08:00:00Z"
    assert n1["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert all(n.state == "pending" and n.status == "firing" and n.receiver == "ops" for n in notes)
    assert route(engine, cfg, T0 + 31) == []  # nothing changed


def test_group_interval_for_changes_and_repeat_interval_for_no_change(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    assert route(engine, cfg, T0) == []  # the group appears now; group_wait counts from here
    assert len(route(engine, cfg, T0 + 30)) == 1
    put_alert(engine, HOT_1, starts_at=T0 + 60)
    assert route(engine, cfg, T0 + 60) == []
    assert route(engine, cfg, T0 + 30 + 299) == []
    changed = route(engine, cfg, T0 + 30 + 300)
    assert [fired(n.payload) for n in changed] == [[("0", "firing"), ("1", "firing")]]
    last = T0 + 330
    assert route(engine, cfg, last + 4 * 3600 - 1) == []
    repeat = route(engine, cfg, last + 4 * 3600)
    assert [fired(n.payload) for n in repeat] == [[("0", "firing"), ("1", "firing")]]
    assert repeat[0].payload == changed[0].payload and repeat[0].dedup_key != changed[0].dedup_key


def test_resolution_is_notified_once_and_the_group_starts_over(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_1)
    route(engine, cfg, T0)
    assert len(route(engine, cfg, T0 + 30)) == 1
    put_alert(engine, HOT_1, state="resolved", ends_at=T0 + 100)
    partly = route(engine, cfg, T0 + 330)
    assert [(n.status, fired(n.payload)) for n in partly] == [("firing", [("0", "firing"), ("1", "resolved")])]
    assert partly[0].payload["alerts"][1]["endsAt"] == format_time(T0 + 100)
    put_alert(engine, HOT_0, state="resolved", ends_at=T0 + 400.25)
    assert route(engine, cfg, T0 + 500) == []  # group_interval since the last notification
    done = route(engine, cfg, T0 + 630)
    assert [(n.status, fired(n.payload)) for n in done] == [("resolved", [("0", "resolved")])]
    assert done[0].payload["alerts"][0]["endsAt"] == "2027-01-15T08:06:40.25Z"
    assert route(engine, cfg, T0 + 2000) == []
    with Session(engine) as s:
        assert s.scalars(select(NotificationGroup)).all() == []  # forgotten once everything was told
    put_alert(engine, HOT_0, starts_at=T0 + 3000)  # fires again: a new group, a new group_wait
    assert route(engine, cfg, T0 + 3000) == []
    again = route(engine, cfg, T0 + 3030)
    assert [(n.status, fired(n.payload)) for n in again] == [("firing", [("0", "firing")])]


def test_without_send_resolved_nothing_is_sent_for_resolution(engine) -> None:
    cfg = parse_config(CONFIG.replace('url: "http://127.0.0.1:9/hook"}', 'url: "http://127.0.0.1:9/hook", '
                                      'send_resolved: false}'))
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_1)
    route(engine, cfg, T0)
    assert len(route(engine, cfg, T0 + 30)) == 1
    put_alert(engine, HOT_1, state="resolved", ends_at=T0 + 60)
    assert route(engine, cfg, T0 + 400) == []  # a resolved alert alone is not news
    put_alert(engine, HOT_0, state="resolved", ends_at=T0 + 500)
    assert route(engine, cfg, T0 + 1000) == []
    with Session(engine) as s:
        assert s.scalars(select(NotificationGroup)).all() == []


def test_alert_that_fires_and_resolves_within_group_wait_is_never_sent(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    route(engine, cfg, T0)
    put_alert(engine, HOT_0, state="resolved", ends_at=T0 + 10)
    assert route(engine, cfg, T0 + 30) == [] and route(engine, cfg, T0 + 3000) == []


def test_silence_mutes_until_it_expires(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_N2)
    sid = create_silence(engine, ["node=n1"], 3600, "maintenance", "ops", now=T0)
    create_silence(engine, ['alertname=~"gpu_xid.*"'], 3600, now=T0)  # matches nothing here
    route(engine, cfg, T0)
    notes = route(engine, cfg, T0 + 30)
    assert [n.payload["groupLabels"]["node"] for n in notes] == ["n2"]
    assert route(engine, cfg, T0 + 1000) == []
    expire_silence(engine, sid, now=T0 + 1000)
    later = route(engine, cfg, T0 + 1001)
    assert [fired(n.payload) for n in later] == [[("0", "firing")]]
    assert later[0].payload["groupLabels"]["node"] == "n1"


def test_silence_that_runs_out_by_itself(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    create_silence(engine, ['alertname=~"gpu_temp.*"', 'severity!="critical"'], 600, now=T0)
    assert route(engine, cfg, T0) == [] and route(engine, cfg, T0 + 30) == [] and route(engine, cfg, T0 + 599) == []
    assert len(route(engine, cfg, T0 + 600)) == 1


def test_node_down_inhibits_that_nodes_gpu_alerts_only(engine) -> None:
    cfg = parse_config(CONFIG)  # no inhibit_rules: the default node_down rule
    down = {"alertname": "node_down", "node": "n1", "severity": "critical"}
    put_alert(engine, down)
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_N2)
    route(engine, cfg, T0)
    notes = route(engine, cfg, T0 + 30)
    assert sorted(n.payload["groupKey"] for n in notes) == [
        '{}:{alertname="gpu_temperature_high", node="n2"}', '{}:{alertname="node_down", node="n1"}']
    put_alert(engine, down, state="resolved", ends_at=T0 + 100)
    after = route(engine, cfg, T0 + 400)
    assert sorted((n.payload["groupKey"], n.status) for n in after) == [
        ('{}:{alertname="gpu_temperature_high", node="n1"}', "firing"), ('{}:{alertname="node_down", node="n1"}',
                                                                       "resolved")]


def test_inhibit_rules_from_the_file_replace_the_default(engine) -> None:
    cfg = parse_config(CONFIG + "inhibit_rules: []\n")
    put_alert(engine, {"alertname": "node_down", "node": "n1"})
    put_alert(engine, HOT_0)
    route(engine, cfg, T0)
    assert len(route(engine, cfg, T0 + 30)) == 2


TREE = """
route:
  receiver: ops
  group_wait: 0s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_by: [node]
      continue: true
    - matchers: ['alertname=~"gpu_.*"', 'node=~"n[0-9]+"']
      receiver: hardware
      group_wait: 1m
    - match: {team: ml}
      receiver: nowhere
receivers:
  - {name: ops, type: webhook, url: "http://127.0.0.1:9/ops"}
  - {name: pager, type: webhook, url: "http://127.0.0.1:9/pager"}
  - {name: hardware, type: slack, url: "http://127.0.0.1:9/slack"}
  - {name: nowhere}
"""


def test_route_tree_matchers_continue_and_inherited_settings(engine) -> None:
    cfg = parse_config(TREE)
    put_alert(engine, {"alertname": "gpu_xid_fatal", "node": "n1", "gpu": "3", "severity": "critical"})
    put_alert(engine, {"alertname": "disk_full", "node": "n1", "severity": "warning"})
    put_alert(engine, {"alertname": "bench_slow", "node": "n1", "team": "ml"})
    first = route(engine, cfg, T0)
    assert sorted((n.receiver, n.payload["groupKey"]) for n in first) == [
        ("ops", '{}:{alertname="disk_full", node="n1"}'),
        ("pager", '{}/{severity="critical"}:{node="n1"}'),
    ]
    second = route(engine, cfg, T0 + 60)
    assert [(n.receiver, n.payload["groupKey"], n.payload["receiver"]) for n in second] == [
        ("hardware", '{}/{alertname=~"gpu_.*",node=~"n[0-9]+"}:{alertname="gpu_xid_fatal", node="n1"}',
         "hardware")]
    with Session(engine) as s:
        keys = {g.group_key for g in s.scalars(select(NotificationGroup))}
    assert '{}/{severity="critical"}/0:{node="n1"}' in keys
    assert not any("team" in k for k in keys)  # routed to a receiver of type none: no group, no message


def test_rerouting_from_a_lost_state_does_not_enqueue_twice(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    route(engine, cfg, T0)
    with Session(engine) as s:
        before = [{c.name: getattr(g, c.name) for c in NotificationGroup.__table__.columns}
                  for g in s.scalars(select(NotificationGroup))]
    assert len(route(engine, cfg, T0 + 30)) == 1
    with engine.begin() as conn:  # a second controller that read the state before the first wrote it
        conn.execute(delete(NotificationGroup))
        conn.execute(insert(NotificationGroup), before)
    assert route(engine, cfg, T0 + 31) == []
    with Session(engine) as s:
        assert len(s.scalars(select(Notification)).all()) == 1


def test_stored_payload_is_the_exact_webhook_body(engine) -> None:
    cfg = parse_config(CONFIG.replace("route:", "external_url: http://dash.example:8501/\n"
                                      "generator_url: '{external_url}/?node={node}&gpu={gpu}'\nroute:"))
    put_alert(engine, {**HOT_0, "summary_html": "<b>&</b>"})
    route(engine, cfg, T0)
    note = route(engine, cfg, T0 + 30)[0]
    body = encode_webhook(note.payload)
    assert body.endswith(b"}\n") and b"\\u003cb\\u003e\\u0026\\u003c/b\\u003e" in body
    assert json.loads(body) == note.payload
    assert list(note.payload) == ["receiver", "status", "alerts", "groupLabels", "commonLabels",
                                  "commonAnnotations", "externalURL", "version", "groupKey", "truncatedAlerts"]
    assert note.payload["externalURL"] == "http://dash.example:8501"
    assert note.payload["alerts"][0]["generatorURL"] == "http://dash.example:8501/?node=n1&gpu=0"


def test_max_alerts_truncates(engine) -> None:
    cfg = parse_config(CONFIG.replace('url: "http://127.0.0.1:9/hook"}', 'url: "http://127.0.0.1:9/hook", '
                                      'max_alerts: 1}'))
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_1)
    route(engine, cfg, T0)
    body = route(engine, cfg, T0 + 30)[0].payload
    assert len(body["alerts"]) == 1 and body["truncatedAlerts"] == 1


def test_old_resolved_alerts_are_not_routed(engine) -> None:
    cfg = parse_config(CONFIG + "resolved_lookback: 1h\n")
    put_alert(engine, HOT_0, state="resolved", ends_at=T0 - 7200)
    put_alert(engine, HOT_1)
    route(engine, cfg, T0)
    notes = route(engine, cfg, T0 + 30)
    assert [fired(n.payload) for n in notes] == [[("1", "firing")]]


def test_routing_on_both_stores(store_url: str) -> None:
    engine = store(store_url)
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_1)
    assert route(engine, cfg, T0) == []
    notes = route(engine, cfg, T0 + 30)
    assert len(notes) == 1 and notes[0].id is not None and route(engine, cfg, T0 + 30) == []
    put_alert(engine, HOT_0, state="resolved", ends_at=T0 + 40)
    assert [fired(n.payload) for n in route(engine, cfg, T0 + 330)] == [[("0", "resolved"), ("1", "firing")]]
    engine.dispose()


def test_quiet_until_is_the_next_time_a_pass_can_decide_anything(engine) -> None:
    """The controller skips routing passes before ``quiet_until`` while nothing changed: every pass in
    that span must indeed create and change nothing, and the first pass at ``quiet_until`` acts."""
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    put_alert(engine, HOT_N2)
    assert route_pass(engine, cfg, T0).quiet_until == T0  # the groups appeared: not quiet
    assert route_pass(engine, cfg, T0 + 1).quiet_until == T0 + 30  # group_wait

    def groups() -> list[tuple]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(NotificationGroup).order_by(NotificationGroup.group_key))]

    before = groups()
    for t in (T0 + 5, T0 + 29.9):
        assert route(engine, cfg, t) == [] and groups() == before
    first = route_pass(engine, cfg, T0 + 30)
    assert len(first.notifications) == 2 and first.quiet_until == T0 + 30
    repeat = T0 + 30 + 4 * 3600
    assert route_pass(engine, cfg, T0 + 31).quiet_until == T0 + 330  # group_interval: the next flush
    flush = route_pass(engine, cfg, T0 + 330)
    assert flush.notifications == [] and flush.quiet_until == repeat
    assert route(engine, cfg, repeat - 1) == []
    assert len(route(engine, cfg, repeat)) == 2
    # A silence that starts or ends later is a time at which muting changes.
    sid = create_silence(engine, ["node=n2"], 3600, now=repeat + 10)
    assert route_pass(engine, cfg, repeat + 20).quiet_until <= repeat + 10 + 3600
    before_sig = silences_signature(engine)
    expire_silence(engine, sid, now=repeat + 30)
    assert silences_signature(engine) != before_sig


def test_a_group_muted_from_the_start_needs_no_pass_until_something_changes(engine) -> None:
    cfg = parse_config(CONFIG)
    put_alert(engine, HOT_0)
    create_silence(engine, ["node=n1"], 86400, now=T0 - 1)
    assert route_pass(engine, cfg, T0).quiet_until == T0  # the group appears
    assert route_pass(engine, cfg, T0 + 60).quiet_until == T0 + 86400 - 1  # only the silence's end
