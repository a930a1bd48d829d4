"""The agent's benchmark schedule: run a configured suite every so often, only while the node's GPUs
are idle, never two at once.

Idle means every GPU in the agent's latest collection is below ``idle_utilization_threshold``
(a node without GPUs: the host CPU is). A suite runs in its own thread so collection goes on (and
records the benchmark's telemetry); an exclusive ``fcntl`` lock on ``bench.lock`` in the spool
folder keeps a second agent (or a second thread) on the same node from starting one meanwhile. The
time of the last run is kept in ``bench.last`` beside it, so a restart does not rerun at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class BenchConfigError(ValueError):
    """A bad ``bench:`` setting."""


@dataclass(slots=True)
class BenchConfig:
    """The agent YAML's ``bench:`` section."""

    enabled: bool = False
    suite: str = "quick"
    every: float = 86400.0  # seconds between runs
    idle_utilization_threshold: float = 0.05  # ratio 0-1
    workloads: list[str] = field(default_factory=list)  # empty: the whole suite
    device: str = "auto"
    storage_path: str | None = None  # where the storage workload writes (default: the temp folder)
    check_every: float = 30.0  # seconds between idle checks


def parse_bench_config(value: Any, source: str) -> BenchConfig:
    """``bench:`` from YAML (a mapping) into a BenchConfig; raises BenchConfigError naming the key."""
    if value is None:
        return BenchConfig()
    if isinstance(value, BenchConfig):
        return value
    if not isinstance(value, dict):
        raise BenchConfigError(f"{source}: bench: expected a mapping (enabled, suite, every, ...)")
    cfg = BenchConfig()
    known = {f.name for f in fields(BenchConfig)}
    for key, raw in value.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise BenchConfigError(f"{source}: bench: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        try:
            setattr(cfg, name, _convert(name, raw))
        except (TypeError, ValueError) as exc:
            raise BenchConfigError(f"{source}: bench.{name}: {exc}") from None
    return cfg


def _convert(name: str, raw: Any) -> Any:
    if name == "enabled":
        if isinstance(raw, bool):
            return raw
        raise ValueError("expected true or false")
    if name == "suite":
        from agent.workloads.base import SUITES

        if raw not in SUITES:
            raise ValueError(f"expected one of {', '.join(SUITES)}")
        return raw
    if name in ("every", "check_every"):
        return _seconds(raw)
    if name == "idle_utilization_threshold":
        x = float(raw)
        if not 0 < x <= 1:
            raise ValueError("expected a ratio in (0, 1], e.g. 0.05")
        return x
    if name == "workloads":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return [str(w).strip() for w in items if str(w).strip()]
    return None if raw is None else str(raw)


def _seconds(raw: Any) -> float:
    """Seconds from a number or ``30s``, ``15m``, ``6h``, ``1d``."""
    text = str(raw).strip()
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:], None)
    value = float(text[:-1] if unit else text) * (unit or 1)
    if value <= 0:
        raise ValueError("expected a positive duration, e.g. 6h")
    return value


def node_idle(samples: Sequence[Any], threshold: float) -> tuple[bool, str]:
    """Whether the node is idle in these samples (the agent's latest collection), and why not.
    Every GPU must report a utilisation below ``threshold``; a GPU with no reading (lost, NVML
    error) is not known to be idle. No GPU samples: the host CPU decides."""
    gpus = [s for s in samples if s.kind == "gpu"]
    if gpus:
        for s in gpus:
            util = s.values.get("utilization_gpu_ratio")
            if s.values.get("status") != "ok" or util is None:
                return False, f"GPU {s.key.get('gpu_index')} has no utilisation reading"
            if util >= threshold:
                return False, f"GPU {s.key.get('gpu_index')} is {util:.0%} busy"
        return True, "all GPUs idle"
    host = next((s for s in samples if s.kind == "host"), None)
    util = host.values.get("cpu_utilization_ratio") if host is not None else None
    if util is None:
        return False, "no utilisation reading yet"
    if util >= threshold:
        return False, f"host CPU is {util:.0%} busy"
    return True, "host idle"


class RunLock:
    """An exclusive, non-blocking ``flock`` on a file: held by one process (and one holder in it) at
    a time, released by the kernel if the holder dies."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class BenchScheduler:
    """Decides when to run and runs. ``samples`` returns the agent's latest collection; ``run_suite``
    runs the configured suite (the runner, in production)."""

    def __init__(self, cfg: BenchConfig, state_dir: str | os.PathLike[str], *,
                 samples: Callable[[], Sequence[Any]], run_suite: Callable[[BenchConfig], Any],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.lock = RunLock(Path(state_dir) / "bench.lock")
        self.last_file = Path(state_dir) / "bench.last"
        self.samples = samples
        self.run_suite = run_suite
        self.clock = clock
        self._running = threading.Lock()  # one run per scheduler even before the file lock is taken
        self._thread: threading.Thread | None = None
        self.last_reason = "not checked yet"

    def last_run(self) -> float | None:
        try:
            return float(self.last_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def due(self, now: float) -> bool:
        last = self.last_run()
        return last is None or now - last >= self.cfg.every

    def check(self) -> str:
        """Decide now; returns why it did or did not start a run (also kept in ``last_reason``).
        Runs in the calling thread; :meth:`start` is the background form."""
        now = self.clock()
        if not self.cfg.enabled:
            return self._say("disabled")
        if not self.due(now):
            return self._say("not due")
        idle, why = node_idle(self.samples(), self.cfg.idle_utilization_threshold)
        if not idle:
            return self._say(f"busy: {why}")
        if not self._running.acquire(blocking=False):
            return self._say("a run is in progress")
        try:
            if not self.lock.acquire():
                return self._say(f"locked: another benchmark holds {self.lock.path}")
            try:
                log.info("node idle (%s): running the %s benchmark suite", why, self.cfg.suite)
                self.last_file.write_text(f"{now}\n")  # even if it fails: do not retry in a tight loop
                self.run_suite(self.cfg)
            finally:
                self.lock.release()
        finally:
            self._running.release()
        return self._say("ran")

    def _say(self, reason: str) -> str:
        self.last_reason = reason
        return reason

    def start(self, stop: threading.Event) -> threading.Thread:
        """Check every ``check_every`` seconds in a daemon thread until ``stop`` is set."""
        def loop() -> None:
            while not stop.wait(self.cfg.check_every):
                try:
                    self.check()
                except Exception:
                    log.exception("scheduled benchmark failed")

        self._thread = threading.Thread(target=loop, name="bench-scheduler", daemon=True)
        self._thread.start()
        return self._thread


def runner_for(db_url: str | None, node_name: str) -> Callable[[BenchConfig], Any]:
    """The production ``run_suite``: the runner over the agent's store, as this node."""
    def run_suite(cfg: BenchConfig) -> Any:
        from agent.workloads.runner import Runner
        from db.engine import make_engine

        engine = make_engine(db_url)
        try:
            records = Runner(suite=cfg.suite, device=cfg.device, workloads=cfg.workloads or None, engine=engine,
                             node_name=node_name, storage_path=cfg.storage_path).run()
        finally:
            engine.dispose()
        failed = [r for r in records if r.result.status == "failed"]
        log.info("benchmark suite %s: %d runs stored, %d failed", cfg.suite, len(records), len(failed))
        return records

    return run_suite


def start_for_agent(cfg: Any, agent: Any, stop: threading.Event) -> BenchScheduler | None:
    """Wire a scheduler to a running agent (``agent.daemon``): its latest samples, its store, its
    spool folder for the lock. None when benchmarks are not enabled."""
    bench: BenchConfig = cfg.bench
    if not bench.enabled:
        return None
    sched = BenchScheduler(bench, cfg.spool_dir, samples=lambda: agent.snapshot.samples,
                           run_suite=runner_for(cfg.db_url, cfg.node_name))
    sched.start(stop)
    log.info("benchmarks: %s suite every %.0f s when every GPU is below %.0f%% busy", bench.suite, bench.every,
             bench.idle_utilization_threshold * 100)
    return sched
