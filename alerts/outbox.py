"""The outbox: delivers due notifications, records every attempt, retries with backoff, and lets any number
of controllers share one store without sending a notification twice.

A notification is claimed with one conditional UPDATE (``pending`` and due, or ``delivering`` with an expired
claim; and no earlier unfinished notification of the same receiver and group), so exactly one controller
wins it; the claim lasts ``claim_timeout``, after which a crashed controller's claim is taken over. Per
receiver and group, notifications go out in the order they were created: a later one waits while an earlier
one is pending or in backoff. Everything lives in the store, so a restarted controller simply resumes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Engine, and_, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from alerts.config import RetryPolicy
from alerts.notify import Delivery, Notifier
from db.models import DeliveryAttempt, Notification

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # "receiver: error", for the controller's log

    def add(self, other: DeliveryStats) -> None:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.failed += other.failed
        self.errors += other.errors


def backoff(attempts: int, policy: RetryPolicy, jitter: float) -> float:
    """Seconds before the next try after ``attempts`` tries: ``min(max, base * 2**(attempts-1)) * jitter``."""
    return min(policy.backoff_max, policy.backoff_base * 2 ** max(0, min(attempts - 1, 62))) * jitter


def _due(now: float) -> ColumnElement[bool]:
    n, earlier = Notification, aliased(Notification)
    blocked = exists().where(earlier.receiver == n.receiver, earlier.group_key == n.group_key, earlier.id < n.id,
                             earlier.state.in_(("pending", "delivering")))
    return and_(or_(and_(n.state == "pending", n.next_attempt_at <= now),
                    and_(n.state == "delivering", n.claimed_until < now)), ~blocked)


def due_notifications(engine: Engine, now: float, limit: int = 100) -> list[Notification]:
    """Deliverable now: due, and first in line for their receiver and group."""
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(Notification).where(_due(now))
                                    .order_by(Notification.id).limit(limit)))


def claim(engine: Engine, notification_id: int, controller_id: str, now: float, ttl: float) -> bool:
    """Atomically take one notification; False if another controller has it (or it is no longer due)."""
    with engine.begin() as conn:
        result = conn.execute(update(Notification)
                              .where(Notification.id == notification_id, _due(now))
                              .values(state="delivering", claimed_by=controller_id, claimed_until=now + ttl))
        return result.rowcount == 1


class _Clock:
    """``now`` as given, advanced by real elapsed time, so attempt times stay on the caller's clock."""

    def __init__(self, now: float) -> None:
        self.start, self.base = time.monotonic(), now

    def __call__(self) -> float:
        return self.base + (time.monotonic() - self.start)


def _finish(engine: Engine, item: Notification, delivery: Delivery, controller_id: str, at: float,
            policy: RetryPolicy, jitter: float, stats: DeliveryStats) -> None:
    attempts = item.attempts + 1
    expired = at - item.created_at >= policy.max_age
    exhausted = policy.max_attempts is not None and attempts >= policy.max_attempts
    values: dict[str, object] = {"attempts": attempts, "claimed_by": None, "claimed_until": None,
                                 "last_error": delivery.error}
    if delivery.ok:
        values.update(state="delivered", delivered_at=at)
        stats.delivered += 1
    elif delivery.retryable and not expired and not exhausted:
        values.update(state="pending", next_attempt_at=at + backoff(attempts, policy, jitter))
        stats.retrying += 1
    else:
        reason = "" if not delivery.retryable else (" (gave up: too old)" if expired else " (gave up: attempts)")
        values.update(state="failed", last_error=f"{delivery.error}{reason}")
        stats.failed += 1
    if not delivery.ok:
        stats.errors.append(f"{item.receiver}: {delivery.error}")
    with engine.begin() as conn:
        conn.execute(insert(DeliveryAttempt).values(
            notification_id=item.id, ts=at, receiver=item.receiver, ok=delivery.ok, http_status=delivery.http_status,
            latency_seconds=delivery.latency_seconds, error=delivery.error, controller=controller_id))
        conn.execute(update(Notification).where(Notification.id == item.id, Notification.claimed_by == controller_id,
                                                Notification.state == "delivering").values(**values))


def _deliver_receiver(engine: Engine, notifier: Notifier | None, items: list[Notification], controller_id: str,
                      clock: _Clock, policy: RetryPolicy, rng: Callable[[], float]) -> DeliveryStats:
    stats = DeliveryStats()
    for item in items:
        if not claim(engine, item.id, controller_id, clock(), policy.claim_timeout):
            continue
        stats.claimed += 1
        if notifier is None:
            delivery = Delivery(False, None, False, f"receiver {item.receiver!r} is not in the configuration")
        else:
            try:
                delivery = notifier.send(item)
            except Exception as exc:  # a notifier bug must not kill the controller or strand the claim
                log.exception("notifier for %s failed", item.receiver)
                delivery = Delivery(False, None, True, f"internal error ({type(exc).__name__})")
        _finish(engine, item, delivery, controller_id, clock(), policy, 0.5 + rng(), stats)
    return stats


def deliver_due(engine: Engine, notifiers: Mapping[str, Notifier], controller_id: str, now: float | None = None,
                *, policy: RetryPolicy | None = None, limit: int = 100, rng: Callable[[], float] = random.random,
                max_workers: int = 8, passes: int = 5) -> DeliveryStats:
    """Deliver what is due at ``now``: receivers in parallel (a slow one does not hold up the others), each
    receiver's notifications in order. Up to ``passes`` rounds, so a group's next notification can follow
    one just delivered. Returns counts; every try is a ``delivery_attempts`` row."""
    policy = policy or RetryPolicy()
    clock = _Clock(time.time() if now is None else now)
    total = DeliveryStats()
    for _ in range(passes):
        items = due_notifications(engine, clock(), limit)
        if not items:
            break
        by_receiver: dict[str, list[Notification]] = {}
        for item in items:
            by_receiver.setdefault(item.receiver, []).append(item)
        if len(by_receiver) == 1 or max_workers <= 1:
            results = [_deliver_receiver(engine, notifiers.get(r), batch, controller_id, clock, policy, rng)
                       for r, batch in by_receiver.items()]
        else:
            with ThreadPoolExecutor(max_workers=min(max_workers, len(by_receiver))) as pool:
                futures = [pool.submit(_deliver_receiver, engine, notifiers.get(r), batch, controller_id, clock,
                                       policy, rng) for r, batch in by_receiver.items()]
                results = [f.result() for f in futures]
        claimed = 0
        for result in results:
            total.add(result)
            claimed += result.claimed
        if claimed == 0:
            break
    return total
