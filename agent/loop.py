"""The node agent: collect on a drift-free schedule, spool every batch, write the spool to the store.

Two threads: the collection loop (never blocked by the store) and the writer, which drains the
spool into the store in order and, when the store is unreachable or locked, simply leaves the
batches on disk and tries again with backoff.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.spool import Spool, SpoolEntry
from agent.supervisor import Supervised
from collectors.records import Event, GpuInfo, Record, Sample, record_from_dict
from db.writer import Batch, Writer, new_batch_id

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


@dataclass
class Snapshot:
    """The latest collection, what ``/metrics`` serves."""

    ts: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    gpus: dict[int, GpuInfo] = field(default_factory=dict)
    event_counts: dict[tuple[Any, ...], int] = field(default_factory=dict)
    collectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    cycle_seconds: float | None = None


class StoreWriter:
    """Drains the spool into the store; owns the engine so a dead connection is simply retried."""

    def __init__(self, spool: Spool, make_writer: Callable[[], Writer], *, max_batches: int = 64,
                 max_backoff: float = 30.0) -> None:
        self.spool = spool
        self.make_writer = make_writer
        self.max_batches = max_batches
        self.max_backoff = max_backoff
        self._writer: Writer | None = None
        self.failures = 0  # consecutive
        self.total_failures = 0
        self.last_error: str | None = None
        self.written_batches = 0
        self.skipped_batches = 0

    def flush(self) -> int:
        """Write pending batches, oldest first, in transactions of up to ``max_batches`` each.
        Returns how many were committed; stops at the first failure (the rest stay spooled)."""
        done = 0
        while True:
            entries = self.spool.pending()[: self.max_batches]
            if not entries:
                return done
            batches: list[tuple[SpoolEntry, Batch]] = []
            for entry in entries:
                payload = self.spool.load(entry)
                if payload is not None:
                    batches.append((entry, batch_from_payload(payload)))
            try:
                if self._writer is None:
                    self._writer = self.make_writer()
                results = self._writer.write_many([b for _, b in batches])
            except Exception as exc:
                self.failures += 1
                self.total_failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning("store write failed (%s); %d batches kept in the spool", self.last_error,
                                len(self.spool.pending()))
                return done
            if self.failures:
                log.info("store reachable again after %d failed attempts", self.failures)
            self.failures = 0
            self.last_error = None
            for (entry, _), result in zip(batches, results, strict=True):
                self.spool.remove(entry)
                if result.written:
                    self.written_batches += 1
                else:
                    self.skipped_batches += 1
            done += len(batches)

    def backoff(self) -> float:
        return 0.0 if not self.failures else min(self.max_backoff, 0.25 * 2 ** min(self.failures, 8))


def batch_payload(batch_id: str, node: dict[str, Any], ts: float, records: Sequence[Record],
                  collectors: dict[str, Any]) -> dict[str, Any]:
    return {"batch_id": batch_id, "node": node, "ts": ts, "collectors": collectors,
            "records": [r.to_dict() for r in records]}


def batch_from_payload(payload: dict[str, Any]) -> Batch:
    return Batch(batch_id=payload["batch_id"], node=payload["node"], ts=payload["ts"],
                 records=[record_from_dict(r) for r in payload["records"]],
                 collectors=payload.get("collectors") or {})


class Agent:
    def __init__(self, *, node: dict[str, Any], collectors: Sequence[Supervised], spool: Spool,
                 store: StoreWriter | None, interval: float, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.collectors = list(collectors)
        self.spool = spool
        self.store = store
        self.interval = interval
        self.clock = clock
        self.monotonic = monotonic
        self.snapshot = Snapshot()
        self.cycles = 0
        self._stop = threading.Event()
        self._wake_writer = threading.Event()
        self._writer_thread: threading.Thread | None = None

    # -- one cycle ----------------------------------------------------------------------------

    def collect(self) -> tuple[float, list[Record]]:
        started = time.perf_counter()
        ts = self.clock()
        records: list[Record] = []
        for c in self.collectors:
            records.extend(c.collect())
        self._update_snapshot(ts, records, time.perf_counter() - started)
        return ts, records

    def cycle(self) -> str:
        """Collect once and spool the batch; returns the batch id."""
        ts, records = self.collect()
        batch_id = new_batch_id()
        node = dict(self.node)
        for c in self.collectors:  # the NVML collector knows the driver, the host collector the machine
            for attr in ("driver_version", "cuda_driver_version"):
                if getattr(c.collector, attr, None) is not None:
                    node[attr] = getattr(c.collector, attr)
        for r in records:
            if isinstance(r, Sample) and r.kind == "host":
                node.setdefault("cpu_count", r.values.get("cpu_count"))
                node.setdefault("memory_total_bytes", r.values.get("memory_total_bytes"))
        node["gpu_count"] = len(self.snapshot.gpus) or None
        self.spool.append(batch_id, batch_payload(batch_id, node, ts, records, self.snapshot.collectors))
        self.cycles += 1
        self._wake_writer.set()
        return batch_id

    def _update_snapshot(self, ts: float, records: list[Record], seconds: float) -> None:
        snap = self.snapshot
        samples = [r for r in records if isinstance(r, Sample)]
        for r in records:
            if isinstance(r, GpuInfo):
                snap.gpus[r.index] = r
            elif isinstance(r, Event):
                key = (r.kind, r.code, r.gpu_index, r.gpu_uuid)
                snap.event_counts[key] = snap.event_counts.get(key, 0) + 1
        snap.ts = ts
        snap.samples = samples
        snap.cycle_seconds = seconds
        snap.collectors = {c.name: c.health.as_dict() for c in self.collectors}

    # -- the daemon ---------------------------------------------------------------------------

    def run(self, *, max_cycles: int | None = None) -> None:
        """Collect every ``interval`` seconds on a fixed grid (no drift: a slow cycle does not push
        the next ones later; missed ticks are skipped) until ``stop()``."""
        if self.store is not None:
            self._writer_thread = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
            self._writer_thread.start()
        origin = self.monotonic()
        tick = 0
        try:
            while not self._stop.is_set():
                try:
                    self.cycle()
                except Exception:
                    log.exception("collection cycle failed")
                if max_cycles is not None and self.cycles >= max_cycles:
                    break
                elapsed = self.monotonic() - origin
                tick = max(tick + 1, math.floor(elapsed / self.interval) + 1)
                self._stop.wait(max(0.0, origin + tick * self.interval - self.monotonic()))
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()
        self._wake_writer.set()

    def shutdown(self, flush_timeout: float = 10.0) -> None:
        """Stop the writer after a last bounded attempt to flush; what is left stays spooled."""
        self._stop.set()
        self._wake_writer.set()
        if self._writer_thread is not None:
            self._writer_thread.join(timeout=flush_timeout)
            if not self._writer_thread.is_alive() and self.store is not None and not self.store.failures:
                self.store.flush()  # a batch spooled while the writer was finishing
            self._writer_thread = None
        for c in self.collectors:
            c.close()

    def _writer_loop(self) -> None:
        assert self.store is not None
        while True:
            stopping = self._stop.is_set()
            self.store.flush()
            if stopping:
                return
            delay = self.store.backoff()
            if delay:
                self._stop.wait(delay)
            else:
                self._wake_writer.wait(timeout=self.interval)
                self._wake_writer.clear()
