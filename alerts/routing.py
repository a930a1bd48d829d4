"""Routing: firing and recently resolved alerts × silences × inhibit rules × the route tree → notifications in
the outbox, grouped and timed as Alertmanager does it.

Per (route, group labels) a ``notification_groups`` row remembers when the group appeared (``first_seen``), when
it was last notified (``last_notified``), which alerts that notification carried as firing (``last_firing``) and
which resolved alerts the group has already dealt with (``last_resolved``: ``[fingerprint, ends_at]`` pairs).
A group is flushed ``group_wait`` after it appears, then at most every ``group_interval``; a flush notifies
when Alertmanager's notification log would (a new firing alert; everything resolved; a newly resolved alert
with ``send_resolved``; else once ``repeat_interval`` has passed). Muted alerts (silenced or inhibited) are left
out of notifications but keep their group alive. A group is forgotten at the first flush that finds no
firing alert in it; a firing alert then starts a new group (and a new ``group_wait``).

Each notification is one INSERT into ``notifications`` in the same transaction as its group's new state, with a
dedup key over receiver, groupKey, status, the alerts (fingerprint, startsAt, endsAt) and the time of the
group's previous notification: routing twice from the same state (a retry, a second controller) enqueues it
once, while a repeat after ``repeat_interval`` is a new message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import Any

from sqlalchemy import Engine, Text, and_, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from alerts import payload
from alerts.config import AlertingConfig, InhibitRule, Receiver, Route
from alerts.silences import SilenceInfo, active_silences
from db.engine import upsert
from db.models import Alert, Notification, NotificationGroup, Silence

KEY_LIMIT = 512  # notification_groups.group_key and notifications.group_key


@dataclass(frozen=True)
class Member:
    """An alert as routing sees it: its labels (with ``alertname``), times, and whether it is muted.
    Annotations stay JSON text until a notification needs them (most cycles notify nothing)."""

    fingerprint: str
    rule: str
    labels: Mapping[str, str]
    annotations_json: str | None
    starts_at: float | None
    ends_at: float | None
    resolved: bool
    muted: bool = False

    @cached_property
    def annotations(self) -> dict[str, str]:
        raw = json.loads(self.annotations_json) if self.annotations_json else {}
        return {str(k): str(v) for k, v in (raw or {}).items()}


@dataclass(frozen=True)
class GroupState:
    first_seen: float
    last_notified: float | None = None
    last_firing: frozenset[str] = frozenset()
    consumed: frozenset[tuple[str, float]] = frozenset()  # resolved alerts already dealt with


@dataclass(frozen=True)
class Flush:
    """What one routing pass decides for one group: its next state (None: forget it) and, when ``notify``,
    the alerts of the message (empty when only the notification log moves, e.g. resolved without
    send_resolved)."""

    state: GroupState | None
    notify: bool = False
    alerts: tuple[Member, ...] = ()


def decide(state: GroupState | None, members: Sequence[Member], route: Route, send_resolved: bool,
           now: float) -> Flush:
    """The pure core of routing for one group (Alertmanager's aggregation group + dedup stage)."""
    firing = [m for m in members if not m.resolved]
    resolved = [m for m in members if m.resolved]
    if state is None:
        if not firing:
            return Flush(None)
        state = GroupState(first_seen=now, consumed=frozenset(_pair(m) for m in resolved))
    fresh = [m for m in resolved if _pair(m) not in state.consumed]
    if not firing and not fresh:
        return Flush(None)
    due_at = state.first_seen + route.group_wait if state.last_notified is None \
        else state.last_notified + route.group_interval
    if now < due_at:
        return Flush(state)
    # After a flush every resolved alert has been dealt with; a group without firing alerts is then done.
    after = replace(state, consumed=frozenset(_pair(m) for m in resolved)) if firing else None
    live = [m for m in firing if not m.muted]
    told = [m for m in fresh if not m.muted]
    if not live and not told:
        return Flush(after)
    live_set = frozenset(m.fingerprint for m in live)
    if state.last_notified is None:
        notify = bool(live)
    elif not live_set <= state.last_firing:
        notify = True
    elif not live:
        notify = bool(state.last_firing)
    elif send_resolved and told:
        notify = True
    else:
        notify = now >= state.last_notified + route.repeat_interval
    if not notify:
        return Flush(after)
    alerts = tuple(live + (told if send_resolved else []))
    return Flush(after and replace(after, last_notified=now, last_firing=live_set), True, alerts)


def _pair(member: Member) -> tuple[str, float]:
    return (member.fingerprint, float(member.ends_at or 0.0))


def labels_of(alert: Any) -> dict[str, str]:
    """The alert's labels as strings, with ``alertname`` (the rule) when the labels lack it; empty values are
    absent labels, as in Alertmanager."""
    labels = {"alertname": alert.rule}
    labels.update({str(k): str(v) for k, v in (alert.labels or {}).items() if v is not None and v != ""})
    return labels


class Inhibitor:
    """Alertmanager's inhibition: a target is muted while a firing source with equal ``equal`` labels exists."""

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[Mapping[str, str]]) -> None:
        self.rules = rules
        self.sources: list[dict[tuple[str, ...], list[Mapping[str, str]]]] = []
        firing = list(firing)
        for rule in rules:
            index: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
            for labels in firing:
                if all(m.matches(labels) for m in rule.source_matchers):
                    index.setdefault(tuple(labels.get(n, "") for n in rule.equal), []).append(labels)
            self.sources.append(index)

    def inhibited(self, labels: Mapping[str, str]) -> bool:
        for rule, index in zip(self.rules, self.sources, strict=True):
            if not all(m.matches(labels) for m in rule.target_matchers):
                continue
            both = all(m.matches(labels) for m in rule.source_matchers)
            for source in index.get(tuple(labels.get(n, "") for n in rule.equal), []):
                if both and all(m.matches(source) for m in rule.target_matchers):
                    continue  # a source that is also a target does not inhibit alerts matching both sides
                return True
        return False


def members_of(alerts: Iterable[Any], config: AlertingConfig, silences: Sequence[SilenceInfo]) -> list[Member]:
    """Alerts (rows with Alert's columns and ``annotations_json``) as routing members, muted or not."""
    rows = list(alerts)
    labelled = [(row, labels_of(row)) for row in rows]
    inhibitor = Inhibitor(config.inhibit_rules, [labels for row, labels in labelled if row.state == "firing"])
    out = []
    for row, labels in labelled:
        muted = any(s.matches(labels) for s in silences) or inhibitor.inhibited(labels)
        resolved = row.state == "resolved"
        ends_at = row.ends_at if row.ends_at is not None or not resolved else row.updated_at
        starts_at = row.starts_at if row.starts_at is not None else row.active_since
        out.append(Member(row.fingerprint, row.rule, labels, row.annotations_json, starts_at, ends_at, resolved,
                          muted))
    return out


def state_key(route: Route, group_labels: Mapping[str, str]) -> str:
    """The group's key in the store: the route's unique id and the group labels (hashed when too long)."""
    key = f"{route.id}:{payload.labelset_string(group_labels)}"
    return key if len(key) <= KEY_LIMIT else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def body_for(config: AlertingConfig, receiver: Receiver, route: Route, group_labels: Mapping[str, str],
             alerts: Iterable[Member]) -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) of one notification."""
    entries = [payload.webhook_alert(labels=m.labels, annotations=m.annotations, starts_at=m.starts_at,
                                     ends_at=m.ends_at, resolved=m.resolved, fingerprint_=m.fingerprint,
                                     generator_url=config.generator_url_for(m.fingerprint, m.rule, m.labels))
               for m in alerts]
    return payload.webhook_body(receiver=receiver.name, group_key_=payload.group_key(route.key, group_labels),
                                group_labels=group_labels, alerts=entries, external_url=config.external_url,
                                max_alerts=receiver.max_alerts)


def dedup_key(receiver: str, body: Mapping[str, Any], previous: float | None) -> str:
    alerts = sorted((a["fingerprint"], a["status"], a["startsAt"], a["endsAt"]) for a in body["alerts"])
    text = json.dumps([receiver, body["groupKey"], body["status"], alerts, previous])
    return hashlib.sha256(text.encode()).hexdigest()


def _load(row: Any) -> GroupState:
    pairs = frozenset((str(fp), float(end)) for fp, end in (row.last_resolved or []))
    return GroupState(row.first_seen, row.last_notified, frozenset(row.last_firing or []), pairs)


def _dump(state: GroupState) -> dict[str, Any]:
    return {"first_seen": state.first_seen, "last_notified": state.last_notified,
            "last_firing": sorted(state.last_firing), "last_resolved": sorted([fp, end] for fp, end in state.consumed)}


@dataclass(frozen=True)
class Pass:
    """What one routing pass did. ``quiet_until``: while the alerts' states and the silences stay as they
    are, no pass before this time can decide anything different (no group falls due, no repeat, no
    resolved alert leaves the lookback, no silence starts or ends), so the controller may skip them."""

    notifications: list[Notification]
    quiet_until: float


def route(engine: Engine, config: AlertingConfig, now: float | None = None) -> list[Notification]:
    """One routing pass at ``now``: updates ``notification_groups`` and enqueues due notifications; returns
    the notifications it created (a second pass from the same state creates none)."""
    return route_pass(engine, config, now).notifications


def silences_signature(engine: Engine) -> tuple[Any, ...]:
    """Changes whenever a silence is created, changed or expired (for skipping quiet routing passes)."""
    with engine.connect() as conn:
        return tuple(conn.execute(select(func.count(), func.max(Silence.id), func.sum(Silence.starts_at),
                                         func.sum(Silence.ends_at))).one())


def route_pass(engine: Engine, config: AlertingConfig, now: float | None = None) -> Pass:
    """``route``, also telling until when the outcome cannot change by time alone (``Pass.quiet_until``)."""
    now = time.time() if now is None else now
    quiet = [now + 86400.0]
    horizon = now - config.resolved_lookback
    with Session(engine, expire_on_commit=False) as session, session.begin():
        alerts = session.execute(select(
            Alert.fingerprint, Alert.rule, Alert.state, Alert.labels, Alert.starts_at, Alert.active_since,
            Alert.ends_at, Alert.updated_at, cast(Alert.annotations, Text).label("annotations_json"),
        ).where(or_(Alert.state == "firing",
                    and_(Alert.state == "resolved", func.coalesce(Alert.ends_at, Alert.updated_at) >= horizon)))).all()
        members = members_of(alerts, config, active_silences(session, now))
        quiet += [m.ends_at + config.resolved_lookback for m in members if m.resolved and m.ends_at is not None]
        quiet += [t for (t,) in session.execute(select(func.min(Silence.starts_at)).where(Silence.starts_at > now))
                  if t is not None]
        quiet += [t for (t,) in session.execute(select(func.min(Silence.ends_at)).where(Silence.ends_at > now))
                  if t is not None]
        groups: dict[str, tuple[Route, dict[str, str], list[Member]]] = {}
        for member in members:
            for matched in config.route.match(member.labels):
                if config.receivers[matched.receiver].type == "none":
                    continue
                labels = matched.group_labels(member.labels)
                groups.setdefault(state_key(matched, labels), (matched, labels, []))[2].append(member)
        ng = NotificationGroup
        stored = {row.group_key: row for row in session.execute(select(
            ng.group_key, ng.first_seen, ng.last_notified, ng.last_firing, ng.last_resolved))}
        insert = partial(upsert, engine)
        created: list[int] = []
        for key in sorted(set(stored) | set(groups)):
            if key not in groups:
                session.execute(delete(NotificationGroup).where(NotificationGroup.group_key == key))
                quiet.append(now)
                continue
            matched, labels, group_members = groups[key]
            receiver = config.receivers[matched.receiver]
            before = _load(stored[key]) if key in stored else None
            flush = decide(before, group_members, matched, receiver.send_resolved, now)
            quiet.append(_next_decision(before, flush, matched, now))
            if flush.notify and flush.alerts:
                body = body_for(config, receiver, matched, labels, flush.alerts)
                new_id = session.execute(insert(Notification).values(
                    dedup_key=dedup_key(receiver.name, body, before.last_notified if before else None),
                    receiver=receiver.name, group_key=key, status=body["status"], payload=body, state="pending",
                    created_at=now, next_attempt_at=now, attempts=0,
                ).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(Notification.id)).scalar()
                if new_id is not None:
                    created.append(int(new_id))
            if flush.state is None:
                if key in stored:
                    session.execute(delete(NotificationGroup).where(NotificationGroup.group_key == key)
                                    .execution_options(synchronize_session=False))
            elif flush.state == before:
                continue
            elif key in stored:
                # No session synchronisation: it checks every loaded group per statement, which made a
                # burst of first notifications quadratic (seconds for a thousand groups).
                session.execute(update(NotificationGroup).where(NotificationGroup.group_key == key)
                                .values(receiver=receiver.name, **_dump(flush.state))
                                .execution_options(synchronize_session=False))
            else:
                session.execute(insert(NotificationGroup).values(group_key=key, receiver=receiver.name,
                                                                 **_dump(flush.state))
                                .on_conflict_do_nothing(index_elements=["group_key"]))
        if not created:
            return Pass([], min(quiet))
        return Pass(list(session.scalars(select(Notification).where(Notification.id.in_(created))
                                         .order_by(Notification.id))), min(quiet))


def _next_decision(before: GroupState | None, flush: Flush, route_: Route, now: float) -> float:
    """The earliest time ``decide`` could answer differently for a group whose members stay the same: ``now``
    when this pass changed the group (or notified), else its next due time, or, once due without notifying,
    the time its repeat interval ends (never, for a group that has not notified: its members are muted)."""
    if before is None or flush.notify or flush.state != before:
        return now
    due_at = before.first_seen + route_.group_wait if before.last_notified is None \
        else before.last_notified + route_.group_interval
    if now < due_at:
        return due_at
    if before.last_notified is None:
        # Due, never notified and nothing to say (every member muted): only a change of the members
        # (a transition, a silence) can make it notify, never the passing of time.
        return float("inf")
    return max(due_at, before.last_notified + route_.repeat_interval)
