"""Runs each collector, backs off one that keeps failing, and reports its health.

A collector that raises is not retried every cycle: it waits ``interval · 2^(failures-1)`` (capped)
before its next try, and its failure becomes an event once per outage, not once per cycle. The
daemon never stops because one source is broken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collectors.records import Collector, Event, Record

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Health:
    status: str = "ok"  # ok | failing | backoff | absent
    failures: int = 0
    last_error: str | None = None
    last_ok: float | None = None
    next_try: float = 0.0
    last_seconds: float | None = None  # wall time of the last collect()

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "failures": self.failures, "last_error": self.last_error,
                "last_ok": self.last_ok, "last_seconds": self.last_seconds}


class Supervised:
    def __init__(self, collector: Collector, *, interval: float, max_backoff: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.collector = collector
        self.name = collector.name
        self.interval = interval
        self.max_backoff = max_backoff
        self.clock = clock
        self.health = Health()

    def collect(self) -> list[Record]:
        now = self.clock()
        h = self.health
        if now < h.next_try:
            h.status = "backoff"
            return []
        started = time.perf_counter()
        try:
            records = self.collector.collect()
        except Exception as exc:
            h.last_seconds = time.perf_counter() - started
            h.failures += 1
            h.last_error = f"{type(exc).__name__}: {exc}"
            delay = min(self.max_backoff, self.interval * 2 ** (h.failures - 1))
            h.next_try = now + delay
            h.status = "failing"
            log.warning("collector %s failed (%s); next try in %.0f s", self.name, h.last_error, delay)
            if h.failures == 1:
                return [Event(now, "collector_error", "warning",
                              f"collector {self.name} failed: {h.last_error}", code=self.name,
                              category="host", source="agent", details={"collector": self.name})]
            return []
        h.last_seconds = time.perf_counter() - started
        recovered = h.failures > 0
        h.failures, h.status, h.last_ok, h.next_try = 0, "ok", now, 0.0
        if recovered:
            records.append(Event(now, "collector_recovered", "info", f"collector {self.name} works again",
                                 code=self.name, category="host", source="agent"))
        return records

    def close(self) -> None:
        try:
            self.collector.close()
        except Exception as exc:
            log.warning("closing collector %s: %s", self.name, exc)
