"""Conditions → rows of the ``alerts`` table: pending → firing → resolved, as Prometheus does it.

An alert is identified by its fingerprint, Alertmanager's: FNV-1a (64 bit) over the labels sorted
by name, each label fed as name, byte 0xff, value, byte 0xff; written as 16 lower-case hex digits.
So the same labels give the same alert across cycles and controller restarts, and receivers that
deduplicate on Alertmanager's fingerprint see the same value.

Per cycle, in one transaction:

- a condition with no alert (or only a resolved one) starts one: ``firing`` when it has already
  held for the rule's ``for`` (its ``since`` comes from the data), else ``pending``; a resolved alert
  that comes back is the same row with a new ``active_since`` and ``starts_at``, as Prometheus
  (through ``pending`` again when the rule has a ``for``);
- a pending alert whose condition has held for ``for`` fires, ``starts_at = active_since + for``;
- a pending alert whose condition is gone is deleted (it never fired);
- a firing alert whose condition is gone resolves (``ends_at = now``), unless the rule's
  ``keep_firing_for`` has not yet passed since the condition was last seen (``updated_at``, bumped
  every cycle the condition holds), which keeps a flapping condition to one alert;
- value and annotations follow the condition every cycle; resolved alerts older than the retention
  are deleted. Alerts of rules no longer configured resolve like any other whose condition is gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Text, bindparam, cast, delete, func, insert, select, update

from alerts.conditions import Condition
from alerts.payload import fingerprint
from alerts.rules import Rule
from db.models import Alert

RETENTION_SECONDS = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert changing state: ``old`` None is a new alert; ``new`` None a pending one dropped."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    old: str | None
    new: str | None
    at: float


@dataclass(slots=True)
class Changes:
    transitions: list[Transition] = field(default_factory=list)
    pending: int = 0  # alerts pending after this cycle
    firing: int = 0  # alerts firing after this cycle
    pruned: int = 0  # resolved alerts deleted for age

    def of(self, new: str | None) -> list[Transition]:
        """The transitions into state ``new`` (None: dropped pending alerts)."""
        return [t for t in self.transitions if t.new == new]


def apply(engine: Engine, conditions: Sequence[Condition], now: float | None = None,
          rules: Sequence[Rule] = (), *, retention: float = RETENTION_SECONDS) -> Changes:
    """Bring the ``alerts`` table in line with ``conditions`` (everything true at ``now``) and
    return what changed. ``rules`` are the configured rules (their ``for`` and
    ``keep_firing_for``); rules named only by conditions count too."""
    now = time.time() if now is None else now
    by_name = {r.name: r for r in rules}
    current: dict[str, Condition] = {}
    for c in conditions:
        by_name.setdefault(c.rule.name, c.rule)
        fp = fingerprint(c.labels)
        if fp not in current or c.since < current[fp].since:
            current[fp] = c
    changes = Changes()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    deletes: list[str] = []
    held: list[str] = []  # active alerts whose condition holds now and whose row needs nothing but updated_at
    with engine.begin() as conn:
        # Plain columns; labels and annotations as their stored JSON text, decoded only when needed
        # (a steady cycle over 10,000 alerts changes few of them).
        rows = {r.fingerprint: r for r in conn.execute(select(
            Alert.fingerprint, Alert.rule, Alert.state, Alert.value, Alert.active_since, Alert.starts_at,
            Alert.ends_at, Alert.updated_at, Alert.node_id, Alert.gpu_id,
            cast(Alert.labels, Text).label("labels_json"), cast(Alert.annotations, Text).label("notes_json")))}
        for fp, c in current.items():
            rule = by_name[c.rule.name]
            row = rows.get(fp)
            values = {"fp": fp, "value": c.value, "annotations": c.annotations, "updated_at": now,
                      "node_id": c.node_id, "gpu_id": c.gpu_id}
            if row is None or row.state == "resolved":
                since = min(c.since, now)
                if row is not None and row.ends_at is not None:
                    since = max(since, min(row.ends_at, now))  # it was gone at ends_at
                state, starts = _start(since, rule, now)
                values.update(state=state, active_since=since, starts_at=starts, ends_at=None)
                if row is None:
                    inserts.append({**values, "rule": rule.name, "labels": dict(c.labels)})
                else:
                    updates.append(values)
                old = None if row is None else row.state
                changes.transitions.append(Transition(fp, rule.name, dict(c.labels), old, state, now))
                continue
            since = min(row.active_since, c.since)
            state, starts = row.state, row.starts_at
            if state == "pending":
                state, starts = _start(since, rule, now)
                if state == "firing":
                    changes.transitions.append(Transition(fp, rule.name, dict(c.labels), "pending", "firing", now))
            if (state, starts, since, c.value, c.node_id, c.gpu_id) == (
                    row.state, row.starts_at, row.active_since, row.value, row.node_id, row.gpu_id) \
                    and _same_json(row.notes_json, c.annotations):
                held.append(fp)
                continue
            values.update(state=state, active_since=since, starts_at=starts, ends_at=None)
            updates.append(values)
        for fp, row in rows.items():
            if fp in current or row.state == "resolved":
                continue
            rule_ = by_name.get(row.rule)
            if row.state == "pending":
                deletes.append(fp)
                changes.transitions.append(Transition(fp, row.rule, _decode(row.labels_json), "pending", None, now))
            elif rule_ is not None and now - row.updated_at < rule_.keep_firing_for:
                continue  # keep firing: the condition was seen true recently enough
            else:
                updates.append({"fp": fp, "state": "resolved", "ends_at": now, "updated_at": now})
                changes.transitions.append(Transition(fp, row.rule, _decode(row.labels_json), "firing", "resolved",
                                                      now))
        _write(conn, inserts, updates, deletes)
        _touch(conn, held, [fp for fp, r in rows.items() if r.state != "resolved"], now)
        changes.pruned = conn.execute(
            delete(Alert).where(Alert.state == "resolved", Alert.ends_at < now - retention)).rowcount or 0
        for state, n in conn.execute(select(Alert.state, func.count()).group_by(Alert.state)):
            if state == "pending":
                changes.pending = n
            elif state == "firing":
                changes.firing = n
    return changes


def _decode(text_: str | None) -> Any:
    return json.loads(text_) if text_ else {}


def _same_json(stored: str | None, value: Any) -> bool:
    """Whether the stored JSON text holds ``value`` (compared as text first: the store keeps what
    ``json.dumps`` wrote)."""
    if stored is None:
        return value is None
    return stored == json.dumps(value) or _decode(stored) == value


def _touch(conn: Any, held: list[str], active: list[str], now: float) -> None:
    """Set ``updated_at`` (the condition was seen true) on the ``held`` alerts: one statement over
    every active alert minus the few that are not held, or per alert when those are many."""
    held_set = set(held)
    others = [fp for fp in active if fp not in held_set]
    if not held:
        return
    if len(others) <= 500:
        stmt = update(Alert).where(Alert.state != "resolved").values(updated_at=now)
        if others:
            stmt = stmt.where(Alert.fingerprint.not_in(others))
        conn.execute(stmt.where(Alert.updated_at < now))
        return
    conn.execute(update(Alert).where(Alert.fingerprint == bindparam("fp")).values(updated_at=bindparam("set_at")),
                 [{"fp": fp, "set_at": now} for fp in held])


def _start(since: float, rule: Rule, now: float) -> tuple[str, float | None]:
    """The state of a condition true since ``since`` and when it fired (None: not yet)."""
    if now - since >= rule.for_seconds:
        return "firing", min(since + rule.for_seconds, now)
    return "pending", None


def _write(conn: Any, inserts: list[dict[str, Any]], updates: list[dict[str, Any]], deletes: list[str]) -> None:
    if inserts:
        conn.execute(insert(Alert), [{
            "fingerprint": v["fp"], "rule": v["rule"], "state": v["state"], "labels": v["labels"],
            "annotations": v["annotations"], "value": v["value"], "active_since": v["active_since"],
            "starts_at": v["starts_at"], "ends_at": v["ends_at"], "updated_at": v["updated_at"],
            "node_id": v["node_id"], "gpu_id": v["gpu_id"]} for v in inserts])
    # executemany wants one statement shape per batch: group the updates by the columns they set.
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for v in updates:
        shapes.setdefault(tuple(sorted(k for k in v if k != "fp")), []).append(v)
    for cols, batch in shapes.items():
        stmt = (update(Alert).where(Alert.fingerprint == bindparam("fp"))
                .values({c: bindparam(f"set_{c}") for c in cols}))  # column names are reserved
        conn.execute(stmt, [{"fp": v["fp"], **{f"set_{c}": v[c] for c in cols}} for v in batch])
    if deletes:
        conn.execute(delete(Alert).where(Alert.fingerprint.in_(deletes)))


def active(engine: Engine, state: str | None = None) -> list[dict[str, Any]]:
    """Alerts that are pending or firing (or only those in ``state``), newest first."""
    q = select(Alert).order_by(Alert.active_since.desc())
    q = q.where(Alert.state == state) if state else q.where(Alert.state != "resolved")
    with engine.connect() as conn:
        return [{c.name: getattr(r, c.name) for c in Alert.__table__.columns} for r in conn.execute(q)]
