"""Alerting read models: alerts, their counts, the delivery log and stored health, for the dashboard.

Like ``db.readmodels``: engine and plain arguments in, plain rows (dicts) out, no UI and no pandas.
The controller (``gpufleet controller run``) writes these tables; here they are only read.

Scope (cluster, node, GPU model) applies as it does to events: an alert or health row about a GPU
is in scope when the GPU is; one about a node (no GPU) when the node is in the chosen clusters and
nodes and, with a model filter, has a GPU of that model. Alerts about neither (fleet-wide) are in
scope only when nothing is filtered. Notifications are not tied to one node in the store (their
payload carries the alerts), so they are scoped by the caller.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Select, and_, exists, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from db.models import Alert, DeliveryAttempt, Gpu, HealthState, Node, Notification
from db.readmodels import Scope, _rows, scoped_gpu_ids

ACTIVE_LIMIT = 2000  # pending and firing alerts shown at most
RESOLVED_LIMIT = 500  # resolved alerts in the range, newest first
NOTIFICATION_LIMIT = 1000
ATTEMPT_LIMIT = 5000
UNFINISHED = ("pending", "delivering")


def scoped_node_ids(scope: Scope) -> Select[Any] | None:
    """A subquery of the node ids in ``scope``; ``None`` when the scope is the whole fleet."""
    if not scope:
        return None
    q = select(Node.id)
    if scope.clusters:
        q = q.where(Node.cluster.in_(scope.clusters))
    if scope.nodes:
        q = q.where(Node.name.in_(scope.nodes))
    if scope.models:
        q = q.where(exists().where(Gpu.node_id == Node.id, Gpu.model.in_(scope.models)))
    return q


def _scoped(gpu_id: Any, node_id: Any, scope: Scope) -> list[ColumnElement[bool]]:
    gpus, nodes = scoped_gpu_ids(scope), scoped_node_ids(scope)
    if gpus is None or nodes is None:
        return []
    return [or_(and_(gpu_id.is_not(None), gpu_id.in_(gpus)), and_(gpu_id.is_(None), node_id.in_(nodes)))]


def _severity() -> ColumnElement[Any]:
    return Alert.labels["severity"].as_string()


def _alert_select() -> Select[Any]:
    return (select(Alert.fingerprint, Alert.rule, Alert.state, Alert.labels, Alert.annotations, Alert.value,
                   Alert.active_since, Alert.starts_at, Alert.ends_at, Alert.updated_at, Alert.node_id,
                   Alert.gpu_id, Node.name.label("node"), Node.cluster, Gpu.index.label("gpu"),
                   Gpu.model, Gpu.uuid)
            .outerjoin(Node, Node.id == Alert.node_id).outerjoin(Gpu, Gpu.id == Alert.gpu_id))


def alerts(engine: Engine, scope: Scope, start: float, end: float, *, active_limit: int = ACTIVE_LIMIT,
           resolved_limit: int = RESOLVED_LIMIT) -> list[dict[str, Any]]:
    """Pending and firing alerts (the controller's current state, newest first), then the alerts
    resolved in [start, end) (newest first)."""
    where = _scoped(Alert.gpu_id, Alert.node_id, scope)
    active = (_alert_select().where(Alert.state != "resolved", *where)
              .order_by(Alert.active_since.desc()).limit(active_limit))
    resolved = (_alert_select().where(Alert.state == "resolved", Alert.ends_at >= start, Alert.ends_at < end, *where)
                .order_by(Alert.ends_at.desc()).limit(resolved_limit))
    return _rows(engine, active) + _rows(engine, resolved)


def alert_counts(engine: Engine, scope: Scope, start: float, end: float) -> list[dict[str, Any]]:
    """How many alerts per (state, severity): pending and firing ones now, resolved ones in [start, end)."""
    severity = _severity()
    q = (select(Alert.state, severity.label("severity"), func.count().label("count"))
         .where(or_(Alert.state != "resolved", and_(Alert.ends_at >= start, Alert.ends_at < end)),
                *_scoped(Alert.gpu_id, Alert.node_id, scope))
         .group_by(Alert.state, severity))
    return _rows(engine, q)


def notifications(engine: Engine, start: float, end: float, *, limit: int = NOTIFICATION_LIMIT) -> list[dict[str, Any]]:
    """The delivery log: notifications created in [start, end), not finished yet (whenever created),
    or tried in the range; newest first."""
    n = Notification
    tried = exists().where(DeliveryAttempt.notification_id == n.id, DeliveryAttempt.ts >= start,
                           DeliveryAttempt.ts < end)
    q = (select(n.id, n.receiver, n.group_key, n.status, n.payload, n.state, n.created_at, n.next_attempt_at,
                n.attempts, n.delivered_at, n.last_error, n.claimed_by)
         .where(or_(and_(n.created_at >= start, n.created_at < end), n.state.in_(UNFINISHED), tried))
         .order_by(n.created_at.desc(), n.id.desc()).limit(limit))
    return _rows(engine, q)


def delivery_attempts(engine: Engine, start: float, end: float, *, limit: int = ATTEMPT_LIMIT) -> list[dict[str, Any]]:
    """Delivery attempts in [start, end), newest first."""
    a = DeliveryAttempt
    q = (select(a.id, a.notification_id, a.ts, a.receiver, a.ok, a.http_status, a.latency_seconds, a.error,
                a.controller)
         .where(a.ts >= start, a.ts < end).order_by(a.ts.desc(), a.id.desc()).limit(limit))
    return _rows(engine, q)


def health_states(engine: Engine, scope: Scope) -> list[dict[str, Any]]:
    """Stored health of the GPUs and nodes in scope (``alerts.health``'s columns: entity, entity_id,
    node_id, node, gpu (index), uuid, model, state, reasons, recommended_action, since, updated_at)."""
    h = HealthState
    gpus, nodes = scoped_gpu_ids(scope), scoped_node_ids(scope)
    q = (select(h.entity, h.entity_id, h.node_id, Node.name.label("node"), Node.cluster, Gpu.index.label("gpu"),
                Gpu.uuid, Gpu.model, h.state, h.reasons, h.recommended_action, h.since, h.updated_at)
         .outerjoin(Node, Node.id == h.node_id)
         .outerjoin(Gpu, and_(Gpu.id == h.entity_id, h.entity == "gpu")))
    if gpus is not None and nodes is not None:
        q = q.where(or_(and_(h.entity == "gpu", h.entity_id.in_(gpus)),
                        and_(h.entity == "node", h.entity_id.in_(nodes))))
    return _rows(engine, q)


def activity(engine: Engine) -> dict[str, Any]:
    """Whether the controller has written anything (alerts, health, notifications; silences come from
    the CLI), and when it last stored health (``None``: never), over the whole fleet."""
    with engine.connect() as conn:
        found: dict[str, Any] = {name: bool(conn.execute(select(exists().select_from(table))).scalar())
                 for name, table in (("alerts", Alert), ("health", HealthState), ("notifications", Notification))}
        found["health_updated"] = conn.execute(select(func.max(HealthState.updated_at))).scalar()
    return found
