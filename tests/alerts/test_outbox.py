"""The outbox: delivery through a receiver that is down, failing, slow and then healthy, in real time; two
controllers on one store never double-send; retries, backoff, giving up, holding a group's order, taking over
a crashed controller's claim."""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from alerts.config import RetryPolicy, parse_config
from alerts.notify import SIGNATURE_HEADER, Delivery, build_notifiers, verify
from alerts.outbox import backoff, claim, deliver_due
from alerts.payload import encode_webhook
from alerts.routing import route
from db.engine import make_engine
from db.models import DeliveryAttempt, Notification
from tests.alerts.harness import T0, Behaviour, Receiver, put_alert, store
from tests.conftest import free_port

FAST = RetryPolicy(backoff_base=0.2, backoff_max=2.0, max_age=3600, claim_timeout=30)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=300.0)
    assert [backoff(n, policy, 1.0) for n in (1, 2, 3, 4, 10, 100)] == [1, 2, 4, 8, 300, 300]
    assert backoff(3, policy, 0.5) == 2 and backoff(3, policy, 1.5) == 6


def test_down_failing_slow_then_healthy_receiver_gets_each_notification_once_in_order(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    port = free_port()
    cfg = parse_config(f"""
route: {{receiver: hook, group_wait: 0.5s, group_interval: 2s, repeat_interval: 1h}}
receivers:
  - {{name: hook, type: webhook, url: "http://127.0.0.1:{port}/alerts", secret: shh-hmac-key, timeout: 1s}}
""")
    notifiers = build_notifiers(cfg)
    start = time.time()

    def phase(_seen: list) -> Behaviour:
        elapsed = time.time() - start
        if elapsed < 27:
            return Behaviour(500, body=b"upstream broken")
        if elapsed < 33:
            return Behaviour(200, delay=1.6)  # longer than the 1 s timeout
        return Behaviour(200)

    server = Receiver(phase, port=port)
    n1 = {"alertname": "gpu_temperature_high", "node": "n1", "gpu": "0"}
    n1b = {**n1, "gpu": "1"}
    n2 = {**n1, "node": "n2"}
    n3 = {**n1, "node": "n3"}
    timeline = [
        (0, lambda: (put_alert(engine, n1, starts_at=start), put_alert(engine, n2, starts_at=start))),
        (5, lambda: put_alert(engine, n1b, starts_at=start + 5)),
        (10, lambda: put_alert(engine, n2, starts_at=start, state="resolved", ends_at=start + 10)),
        (20, server.start),  # listening from here on: 500s, then slow, then healthy
        (35, lambda: put_alert(engine, n3, starts_at=start + 35)),
        (38, lambda: (put_alert(engine, n1, starts_at=start, state="resolved", ends_at=start + 38),
                      put_alert(engine, n1b, starts_at=start + 5, state="resolved", ends_at=start + 38))),
    ]
    try:
        while time.time() - start < 75:
            elapsed = time.time() - start
            while timeline and timeline[0][0] <= elapsed:
                timeline.pop(0)[1]()
            route(engine, cfg, time.time())
            deliver_due(engine, notifiers, "controller-a", time.time(), policy=FAST)
            if not timeline and elapsed > 42:
                with Session(engine) as s:
                    open_ = s.scalar(select(func.count()).select_from(Notification)
                                     .where(Notification.state.in_(("pending", "delivering"))))
                if open_ == 0:
                    break
            time.sleep(0.1)
    finally:
        server.stop()

    with Session(engine) as s:
        notes = s.scalars(select(Notification).order_by(Notification.id)).all()
        attempts = s.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all()
    summary = [(n.payload["groupLabels"]["node"], n.status, [a["status"] for a in n.payload["alerts"]]) for n in notes]
    assert summary == [
        ("n1", "firing", ["firing"]), ("n2", "firing", ["firing"]),
        ("n1", "firing", ["firing", "firing"]), ("n2", "resolved", ["resolved"]),
        ("n3", "firing", ["firing"]), ("n1", "resolved", ["resolved", "resolved"]),
    ]
    assert all(n.state == "delivered" for n in notes)
    # Received exactly once each, byte for byte, signed, and per group in the order created.
    received = [r.body for r in server.accepted]
    assert sorted(received) == sorted(encode_webhook(n.payload) for n in notes)
    keys = [(b["groupKey"], b["status"], tuple((a["fingerprint"], a["status"]) for a in b["alerts"]))
            for b in (n.payload for n in notes)]
    assert len(set(keys)) == len(keys)
    for r in server.accepted:
        assert r.path == "/alerts" and verify(r.body, r.headers[SIGNATURE_HEADER], "shh-hmac-key")
    for node in ("n1", "n2"):
        mine = [encode_webhook(n.payload) for n in notes if n.payload["groupLabels"]["node"] == node]
        assert [b for b in received if b in mine] == mine
    # Every try is on record, with what went wrong, and the counts add up.
    by_note = Counter(a.notification_id for a in attempts)
    assert all(by_note[n.id] == n.attempts for n in notes)
    assert all(sum(a.ok for a in attempts if a.notification_id == n.id) == 1 for n in notes)
    errors = {a.error for a in attempts if not a.ok}
    assert {"connection refused", "HTTP 500: upstream broken", "timed out after 1 s"} <= errors
    early = [a for a in attempts if a.notification_id == notes[0].id]
    assert early[0].error == "connection refused" and early[-1].ok and early[-1].http_status == 200
    assert all(a.receiver == "hook" and a.controller == "controller-a" and a.latency_seconds is not None
               for a in attempts)
    assert not any("shh-hmac-key" in (a.error or "") or str(port) in (a.error or "") for a in attempts)
    engine.dispose()


class CountingNotifier:
    """Records which controller sent which notification; fails each id's first try when asked to."""

    def __init__(self, log: list, lock: threading.Lock, controller: str, flaky: set[int]) -> None:
        self.log, self.lock, self.controller, self.flaky = log, lock, controller, flaky

    def send(self, notification) -> Delivery:
        time.sleep(0.002)
        with self.lock:
            if notification.id in self.flaky:
                self.flaky.discard(notification.id)
                return Delivery(False, 503, True, "HTTP 503", 0.002)
            self.log.append((notification.id, self.controller))
        return Delivery(True, 200, False, None, 0.002)


def enqueue(engine, count: int, receivers: int = 3, groups: int = 4, at: float = T0) -> list[int]:
    with engine.begin() as conn:
        for i in range(count):
            conn.execute(insert(Notification).values(
                dedup_key=f"k{i}", receiver=f"r{i % groups % receivers}", group_key=f"g{i % groups}", status="firing",
                payload={"n": i}, state="pending", created_at=at, next_attempt_at=at, attempts=0))
    with Session(engine) as s:
        return list(s.scalars(select(Notification.id).order_by(Notification.id)))


def test_two_controllers_on_one_store_never_double_send(store_url: str) -> None:
    setup = store(store_url)
    ids = enqueue(setup, 120, at=time.time())
    setup.dispose()
    log: list[tuple[int, str]] = []
    lock = threading.Lock()
    flaky = set(ids[::7])
    policy = RetryPolicy(backoff_base=0.01, backoff_max=0.05, claim_timeout=30)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def controller(name: str) -> None:
        engine = make_engine(store_url)  # its own engine and pool, like a second process
        notifiers = {f"r{i}": CountingNotifier(log, lock, name, flaky) for i in range(3)}
        try:
            barrier.wait(timeout=30)
            deadline = time.time() + 60
            while time.time() < deadline:
                with lock:
                    if len(log) >= len(ids):
                        break
                deliver_due(engine, notifiers, name, time.time(), policy=policy, limit=20)
        except BaseException as exc:  # surfaced below
            failures.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=controller, args=(n,)) for n in ("ctl-1", "ctl-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    sent = Counter(i for i, _ in log)
    assert sorted(sent) == ids and set(sent.values()) == {1}
    for g in range(4):  # within a group (one receiver), in creation order
        order = [i for i, _ in log if ids.index(i) % 4 == g]
        assert order == sorted(order)
    check = store(store_url)
    with Session(check) as s:
        assert s.scalar(select(func.count()).select_from(DeliveryAttempt).where(DeliveryAttempt.ok)) == len(ids)
        assert s.scalar(select(func.count()).select_from(Notification).where(Notification.state != "delivered")) == 0
        assert s.scalar(select(func.count()).select_from(DeliveryAttempt).where(~DeliveryAttempt.ok)) == len(
            ids[::7])
    check.dispose()


class Scripted:
    def __init__(self, *answers: Delivery) -> None:
        self.answers, self.sent = list(answers), []

    def send(self, notification) -> Delivery:
        self.sent.append(notification.id)
        return self.answers.pop(0) if self.answers else Delivery(True, 200)


RETRY = Delivery(False, 500, True, "HTTP 500: boom", 0.01)


def states(engine) -> list[tuple[int, str, int, str | None]]:
    with Session(engine) as s:
        return [(n.id, n.state, n.attempts, n.last_error)
                for n in s.scalars(select(Notification).order_by(Notification.id))]


def test_retry_schedule_and_order_is_held_per_group(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    first, second, other = enqueue(engine, 3, receivers=1, groups=2)[:3]  # first and other share group g0
    notifier = Scripted(RETRY, Delivery(True, 200), RETRY)
    policy = RetryPolicy(backoff_base=10, backoff_max=300)
    stats = deliver_due(engine, {"r0": notifier}, "c", T0, policy=policy, rng=lambda: 0.5)
    assert (stats.claimed, stats.retrying, stats.delivered) == (2, 1, 1) and notifier.sent == [first, second]
    with Session(engine) as s:
        assert s.get(Notification, first).next_attempt_at == pytest.approx(T0 + 10, abs=0.5)
    assert deliver_due(engine, {"r0": notifier}, "c", T0 + 5, policy=policy).claimed == 0  # other waits for first
    stats = deliver_due(engine, {"r0": notifier}, "c", T0 + 10.5, policy=policy, rng=lambda: 0.5)
    assert stats.retrying == 1 and notifier.sent[-1] == first
    with Session(engine) as s:
        assert s.get(Notification, first).next_attempt_at == pytest.approx(T0 + 30.5, abs=0.5)  # 20 s
    deliver_due(engine, {"r0": notifier}, "c", T0 + 31, policy=policy)
    assert notifier.sent[-2:] == [first, other]  # delivered first, then the one held behind it
    assert [s[1:3] for s in states(engine)] == [("delivered", 3), ("delivered", 1), ("delivered", 1)]


def test_giving_up(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    ids = enqueue(engine, 4, receivers=4, groups=4)
    bad = Delivery(False, 400, False, "HTTP 400: unknown field 'x'", 0.01)
    notifiers = {"r0": Scripted(bad), "r1": Scripted(RETRY, RETRY, RETRY), "r2": Scripted(RETRY)}
    policy = RetryPolicy(backoff_base=1, backoff_max=1, max_attempts=2, max_age=100)
    deliver_due(engine, notifiers, "c", T0, policy=policy, rng=lambda: 0.5)
    deliver_due(engine, notifiers, "c", T0 + 5, policy=policy)
    deliver_due(engine, notifiers, "c", T0 + 101, policy=policy)
    assert states(engine) == [
        (ids[0], "failed", 1, "HTTP 400: unknown field 'x'"),
        (ids[1], "failed", 2, "HTTP 500: boom (gave up: attempts)"),
        (ids[2], "delivered", 2, None),
        (ids[3], "failed", 1, "receiver 'r3' is not in the configuration"),
    ]


def test_a_crashed_controllers_claim_is_taken_over_and_a_restart_resumes(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    (only,) = enqueue(engine, 1, receivers=1, groups=1)
    assert claim(engine, only, "crashed", T0, ttl=30)
    assert not claim(engine, only, "other", T0 + 1, ttl=30)
    notifier = Scripted()
    assert deliver_due(engine, {"r0": notifier}, "other", T0 + 29, policy=RetryPolicy()).claimed == 0
    engine.dispose()
    restarted = store(sqlite_url)
    stats = deliver_due(restarted, {"r0": notifier}, "other", T0 + 31, policy=RetryPolicy())
    assert stats.delivered == 1 and notifier.sent == [only]
    with Session(restarted) as s:
        attempt = s.scalars(select(DeliveryAttempt)).one()
    assert (attempt.controller, attempt.ok, attempt.ts >= T0 + 31) == ("other", True, True)


def test_a_notifier_that_raises_is_retried_not_fatal(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    enqueue(engine, 1, receivers=1, groups=1)
    broken = SimpleNamespace(send=lambda n: 1 / 0)
    stats = deliver_due(engine, {"r0": broken}, "c", T0)
    assert stats.retrying == 1 and states(engine)[0][1:] == ("pending", 1, "internal error (ZeroDivisionError)")


def test_route_and_deliver_on_postgresql_and_sqlite(store_url: str) -> None:
    engine = store(store_url)
    cfg = parse_config("route: {receiver: r0, group_wait: 0s}\nreceivers: [{name: r0, type: webhook, url: 'http://x/'}]")
    put_alert(engine, {"alertname": "gpu_lost", "node": "n1", "gpu": "0"})
    notifier = Scripted(RETRY)
    assert len(route(engine, cfg, T0)) == 1
    deliver_due(engine, {"r0": notifier}, "c", T0, rng=lambda: 0.5)
    deliver_due(engine, {"r0": notifier}, "c", T0 + 2, rng=lambda: 0.5)
    assert [s[1:3] for s in states(engine)] == [("delivered", 2)]
    engine.dispose()
