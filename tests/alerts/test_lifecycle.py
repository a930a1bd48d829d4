"""The alerts table through cycles: pending → firing → resolved, flapping, keep_firing_for,
fingerprints, pruning; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from alerts.evaluate import Condition
from alerts.lifecycle import apply, fingerprint
from alerts.rules import Rule
from db.models import Alert
from tests.alerts import scenarios as c
from tests.alerts.scenarios import T0, Fleet, healthy
from tests.conftest import migrated

HOT = c.rules("""\
rules:
  - name: hot
    kind: threshold
    column: temperature_gpu_celsius
    op: ">"
    value: 85
    for: 5m
    severity: warning
""")[0]


@pytest.fixture
def store(store_url: str) -> Iterator[Engine]:
    with migrated(store_url) as engine:
        yield engine


@pytest.fixture
def any_fleet(store_url: str) -> Iterator[Fleet]:
    yield from c.opened(store_url)


def cond(rule: Rule, since: float, value: float = 1.0, gpu: str = "0") -> Condition:
    labels = {"alertname": rule.name, "severity": rule.severity, "node": "n1", "gpu": gpu}
    return Condition(rule, labels, {"summary": f"value {value}"}, value, since, 1, int(gpu) + 1)


def rows(engine: Engine) -> list[Alert]:
    with engine.connect() as conn:
        return list(conn.execute(select(Alert).order_by(Alert.fingerprint)))


def test_fingerprint_is_alertmanagers() -> None:
    # prometheus/common model.LabelsToSignature: the empty set and its test vector.
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == f"{5799056148416392346:016x}"
    assert fingerprint({"a": "b", "c": "d"}) == fingerprint({"c": "d", "a": "b"})
    assert fingerprint({"a": "bc"}) != fingerprint({"ab": "c"})


def test_pending_firing_resolved_and_back(store: Engine) -> None:
    rule = HOT
    changes = apply(store, [cond(rule, T0)], T0 + 60, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [(None, "pending")] and changes.pending == 1
    (a,) = rows(store)
    assert a.state == "pending" and a.active_since == T0 and a.starts_at is None
    assert a.fingerprint == fingerprint({"alertname": "hot", "severity": "warning", "node": "n1", "gpu": "0"})

    apply(store, [cond(rule, T0, value=2.0)], T0 + 240, [rule])
    (a,) = rows(store)
    assert a.state == "pending" and a.value == 2.0 and a.annotations == {"summary": "value 2.0"}

    changes = apply(store, [cond(rule, T0, value=3.0)], T0 + 300, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [("pending", "firing")] and changes.firing == 1
    (a,) = rows(store)
    assert a.state == "firing" and a.starts_at == T0 + 300 and a.ends_at is None

    changes = apply(store, [], T0 + 600, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [("firing", "resolved")]
    (a,) = rows(store)
    assert a.state == "resolved" and a.ends_at == T0 + 600 and a.value == 3.0 and a.starts_at == T0 + 300

    apply(store, [], T0 + 660, [rule])  # stays resolved, untouched
    (a,) = rows(store)
    assert a.state == "resolved" and a.ends_at == T0 + 600

    # It comes back: the same row (same fingerprint), through pending again since the rule has a for.
    changes = apply(store, [cond(rule, T0 + 700)], T0 + 720, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [("resolved", "pending")]
    changes = apply(store, [cond(rule, T0 + 700)], T0 + 1000, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [("pending", "firing")]
    (b,) = rows(store)
    assert b.fingerprint == a.fingerprint and b.starts_at == T0 + 1000 and b.ends_at is None


def test_a_condition_older_than_for_fires_at_once(store: Engine) -> None:
    changes = apply(store, [cond(HOT, T0)], T0 + 3600, [HOT])
    assert [(t.old, t.new) for t in changes.transitions] == [(None, "firing")]
    (a,) = rows(store)
    assert a.starts_at == T0 + 300  # since + for: the time it would have fired


def test_pending_that_clears_is_dropped(store: Engine) -> None:
    apply(store, [cond(HOT, T0)], T0 + 60, [HOT])
    changes = apply(store, [], T0 + 120, [HOT])
    assert [(t.old, t.new) for t in changes.transitions] == [("pending", None)]
    assert rows(store) == []


def test_keep_firing_for_rides_out_short_gaps(store: Engine) -> None:
    rule = c.rules(
        "rules:\n  - {name: flappy, kind: threshold, column: temperature_gpu_celsius, op: '>', value: 85,\n"
        "     keep_firing_for: 3m, severity: warning}\n")[0]
    apply(store, [cond(rule, T0)], T0, [rule])
    for now in (T0 + 60, T0 + 120, T0 + 179):  # cleared, but last seen less than 3 minutes ago
        assert apply(store, [], now, [rule]).transitions == []
    assert apply(store, [cond(rule, T0 + 170)], T0 + 170, [rule]).transitions == []  # back again
    (a,) = rows(store)
    assert a.state == "firing" and a.starts_at == T0 and a.active_since == T0
    assert apply(store, [], T0 + 170 + 179, [rule]).transitions == []
    changes = apply(store, [], T0 + 170 + 180, [rule])
    assert [(t.old, t.new) for t in changes.transitions] == [("firing", "resolved")]


def test_rules_no_longer_configured_resolve_and_old_alerts_are_pruned(store: Engine) -> None:
    other = c.rules("rules:\n  - {name: other, kind: absence, target: node, severity: critical}\n")[0]
    apply(store, [cond(HOT, T0), cond(other, T0)], T0 + 3600, [HOT, other])
    changes = apply(store, [cond(HOT, T0)], T0 + 3660, [HOT])  # "other" was taken out of the rule file
    assert [(t.rule, t.new) for t in changes.transitions] == [("other", "resolved")]
    changes = apply(store, [cond(HOT, T0)], T0 + 3660 + 7 * 86400 + 1, [HOT])
    assert changes.pruned == 1
    assert [a.rule for a in rows(store)] == ["hot"]


def test_flapping_with_for_never_fires(any_fleet: Fleet) -> None:
    """Hot and cool every other minute for 20 minutes: with for: 5m, pending alerts come and go."""
    any_fleet.write(T0, T0 + 1200, lambda n, i, ts: healthy(
        temperature_gpu_celsius=91.0 if i == 0 and int((ts - T0) / 60) % 2 == 0 else 60.0))
    seen = []
    for k in range(21):
        _, changes = any_fleet.cycle([HOT], T0 + 60 * k)
        seen += [(t.old, t.new) for t in changes.transitions]
    assert ("pending", "firing") not in seen and (None, "firing") not in seen
    assert seen.count((None, "pending")) == 11 and seen.count(("pending", None)) == 10


def test_flapping_with_keep_firing_for_is_one_alert(any_fleet: Fleet) -> None:
    rule = c.rules(
        "rules:\n  - {name: flappy, kind: threshold, column: temperature_gpu_celsius, op: '>', value: 85,\n"
        "     keep_firing_for: 3m, severity: warning,\n"
        "     annotations: {summary: '{node} GPU {gpu}: {value}'}}\n")[0]
    any_fleet.write(T0, T0 + 1800, lambda n, i, ts: healthy(
        temperature_gpu_celsius=91.0 if i == 0 and ts <= T0 + 1200 and int((ts - T0) / 60) % 2 == 0 else 60.0))
    seen = []
    for k in range(31):
        _, changes = any_fleet.cycle([rule], T0 + 60 * k)
        seen += [(t.old, t.new, t.at) for t in changes.transitions]
    # Fires once at the first hot minute, rides out every cool one, resolves 3 minutes after the last hot.
    assert seen == [(None, "firing", T0), ("firing", "resolved", T0 + 1200 + 180)]
    (a,) = any_fleet.alerts()
    assert a.state == "resolved" and a.annotations == {"summary": "n1 GPU 0: 91"}


def test_resolution_when_the_condition_ends(any_fleet: Fleet) -> None:
    any_fleet.write(T0 - 300, T0 + 1200, lambda n, i, ts: healthy(
        temperature_gpu_celsius=91.0 if i == 1 and T0 <= ts <= T0 + 600 else 60.0))
    r = [HOT]
    any_fleet.cycle(r, T0 + 240)
    any_fleet.cycle(r, T0 + 600)
    (a,) = any_fleet.alerts()
    assert a.state == "firing" and a.starts_at == T0 + 300
    _, changes = any_fleet.cycle(r, T0 + 660)
    assert [(t.old, t.new, t.labels["gpu"]) for t in changes.transitions] == [("firing", "resolved", "1")]
    (a,) = any_fleet.alerts()
    assert a.state == "resolved" and a.ends_at == T0 + 660 and a.value == 91.0
