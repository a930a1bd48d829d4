"""A failing collector backs off, reports its health, and never stops the others."""

from __future__ import annotations

from agent.supervisor import Supervised
from collectors.records import Sample


class Flaky:
    name = "flaky"

    def __init__(self, fail_times: int) -> None:
        self.fail_times = fail_times
        self.calls = 0

    def check(self) -> bool:
        return True

    def collect(self) -> list:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise OSError("sensor gone")
        return [Sample("host", 0.0, {}, {"load1": 1.0})]

    def close(self) -> None:
        pass


def test_backoff_doubles_and_events_are_not_repeated() -> None:
    now = [0.0]
    c = Flaky(fail_times=3)
    s = Supervised(c, interval=10, clock=lambda: now[0])
    first = s.collect()
    assert [e.kind for e in first] == ["collector_error"]
    assert s.health.status == "failing" and s.health.failures == 1
    assert s.health.last_error == "OSError: sensor gone"
    now[0] = 5.0
    assert s.collect() == [] and s.health.status == "backoff" and c.calls == 1  # not retried yet
    now[0] = 10.0
    assert s.collect() == [] and c.calls == 2  # second failure: no second event
    now[0] = 25.0
    assert s.collect() == [] and c.calls == 2  # backoff is now 20 s
    now[0] = 30.0
    assert s.collect() == [] and c.calls == 3
    now[0] = 70.0
    out = s.collect()
    assert c.calls == 4
    assert [getattr(r, "kind", None) for r in out] == ["host", "collector_recovered"]
    assert s.health.status == "ok" and s.health.failures == 0


def test_backoff_is_capped() -> None:
    now = [0.0]
    c = Flaky(fail_times=100)
    s = Supervised(c, interval=10, max_backoff=60, clock=lambda: now[0])
    for _ in range(20):
        s.collect()
        now[0] = s.health.next_try
    assert s.health.next_try - now[0] <= 60
