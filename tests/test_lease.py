"""One leader among controllers sharing a store; a standby takes over when the lease expires."""

from __future__ import annotations

import threading

from db.engine import make_engine, upgrade
from db.lease import acquire, release


def test_one_holder_then_takeover(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    assert acquire(engine, "controller", "a", ttl=30, now=100)
    assert not acquire(engine, "controller", "b", ttl=30, now=110)
    assert acquire(engine, "controller", "a", ttl=30, now=120)  # renewal
    assert not acquire(engine, "controller", "b", ttl=30, now=149)
    assert acquire(engine, "controller", "b", ttl=30, now=151)  # a stopped renewing
    assert not acquire(engine, "controller", "a", ttl=30, now=152)
    release(engine, "controller", "b")
    assert acquire(engine, "controller", "a", ttl=30, now=153)
    engine.dispose()


def test_racing_controllers_elect_one(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    wins: list[str] = []
    barrier = threading.Barrier(4)

    def contend(name: str) -> None:
        barrier.wait()
        if acquire(engine, "race", name, ttl=30, now=1000):
            wins.append(name)

    threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    engine.dispose()
