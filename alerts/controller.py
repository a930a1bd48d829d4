"""``gpufleet controller run``: one per fleet (plus standbys). Each cycle the leader refreshes the
rollups, evaluates the rules, moves alerts through their lifecycle, judges health, routes alerts
into the outbox and prunes old data; every controller, leader or not, delivers what is due from the
outbox (claims keep two from sending the same notification).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from alerts.config import AlertingConfig
from alerts.evaluate import evaluate
from alerts.health import update_health
from alerts.lifecycle import apply
from alerts.notify import Notifier, build_notifiers
from alerts.outbox import deliver_due
from alerts.routing import route_pass, silences_signature
from alerts.rules import Rule, RuleError, load_default_rules, load_rules, parse_duration
from db.lease import acquire, release
from db.retention import plan, prune
from db.rollups import refresh

log = logging.getLogger(__name__)

LEASE = "controller"


class ControllerError(ValueError):
    """A controller setting that does not make sense: one line naming it."""


@dataclass(frozen=True)
class Settings:
    """The ``controller:`` section of the configuration file."""

    rules: str | None = None  # a rule file; None: the shipped default pack
    evaluation_interval: float = 15.0
    lease_ttl: float = 45.0  # a standby takes over this long after the leader stops renewing
    raw_retention_days: float = 14.0
    rollup_retention_days: float = 365.0
    prune_interval: float = 3600.0
    rollup_interval: float = 60.0  # rollups are refreshed this often, not every cycle
    retention_days: Mapping[str, float] = field(default_factory=dict)  # per table, on top of the two above

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> Settings:
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ControllerError(f"{source}: controller.{key}: unknown setting "
                                      f"(known: {', '.join(sorted(known))})")
            if key == "rules":
                values[key] = None if value is None else str(value)
                continue
            if key == "retention_days":
                values[key] = _retention(value, source)
                continue
            try:
                number = parse_duration(value) if key in ("evaluation_interval", "lease_ttl", "prune_interval",
                                                             "rollup_interval") \
                    else float(value)
            except (RuleError, TypeError, ValueError) as exc:
                raise ControllerError(f"{source}: controller.{key}: {exc}") from exc
            if number <= 0:
                raise ControllerError(f"{source}: controller.{key}: must be positive")
            values[key] = number
        settings = cls(**values)
        try:
            plan(raw_days=settings.raw_retention_days, rollup_days=settings.rollup_retention_days,
                 days=settings.retention_days)
        except ValueError as exc:
            raise ControllerError(f"{source}: controller.retention_days: {exc}") from exc
        if settings.lease_ttl <= settings.evaluation_interval:
            raise ControllerError(f"{source}: controller.lease_ttl must be longer than evaluation_interval")
        return settings


def _retention(value: Any, source: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ControllerError(f"{source}: controller.retention_days: a mapping of table: days, "
                              "e.g. {gpu_samples: 7, events: 90}")
    out = {}
    for table, days in value.items():
        try:
            out[str(table)] = float(days)
        except (TypeError, ValueError) as exc:
            raise ControllerError(f"{source}: controller.retention_days.{table}: not a number of days") from exc
    return out


@dataclass
class CycleReport:
    leader: bool
    conditions: int = 0
    transitions: list[str] = field(default_factory=list)
    notifications: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Task:
    """Periodic leader-only work the composition root hands in (e.g. the planner's straggler refresh,
    which this package may not import): ``run(engine, now)`` every ``interval`` seconds."""

    name: str
    interval: float
    run: Callable[[Engine, float], Any]


class Controller:
    def __init__(self, engine: Engine, config: AlertingConfig, *, rules: list[Rule] | None = None,
                 settings: Settings | None = None, notifiers: Mapping[str, Notifier] | None = None,
                 controller_id: str | None = None, clock: Callable[[], float] = time.time,
                 tasks: Sequence[Task] = ()) -> None:
        self.engine = engine
        self.config = config
        self.settings = settings or Settings.from_mapping(config.controller, config.source)
        if rules is None:
            rules = load_rules(self.settings.rules) if self.settings.rules else load_default_rules()
        self.rules = rules
        self.notifiers = build_notifiers(config) if notifiers is None else notifiers
        self.id = controller_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.leader = False
        self._last_prune = 0.0
        self._last_rollup = 0.0
        self.tasks = list(tasks)
        self._task_last: dict[str, float] = {}
        self._gc_cycles = 0
        self._route_quiet_until = 0.0  # see ``alerts.routing.Pass``
        self._route_silences: tuple[Any, ...] | None = None
        self._stop = threading.Event()

    def cycle(self) -> CycleReport:
        # The cycle allocates tens of thousands of objects next to the remembered conditions and renderings;
        # automatic collections, full ones included, would land at random inside it and rescan those
        # caches. Reference counting frees almost everything; the collector runs at the end of the cycle
        # instead (part of its cost): the young generation every cycle, the middle one every 10th and a
        # full pass every 100th, as its own thresholds would, so no reference cycle outlives a few cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._cycle()
        finally:
            if enabled:
                gc.enable()
                self._gc_cycles += 1
                gc.collect(2 if self._gc_cycles % 100 == 0 else 1 if self._gc_cycles % 10 == 0 else 0)

    def _cycle(self) -> CycleReport:
        started = time.perf_counter()
        now = self.clock()
        leader = acquire(self.engine, LEASE, self.id, self.settings.lease_ttl, now)
        if leader != self.leader:
            log.info("controller %s is %s", self.id, "the leader" if leader else "a standby")
            self._route_quiet_until = 0.0  # another controller may have routed meanwhile
        self.leader = leader
        report = CycleReport(leader=leader)
        if leader:
            if now - self._last_rollup >= self.settings.rollup_interval:
                refresh(self.engine, now=now)
                self._last_rollup = now
            self._run_tasks(now)
            conditions = evaluate(self.engine, self.rules, now)
            changes = apply(self.engine, conditions, now, self.rules)
            report.conditions = len(conditions)
            report.transitions = [f"{t.rule} {t.old or 'new'}->{t.new or 'gone'}" for t in changes.transitions]
            for line in report.transitions:
                log.info("alert %s", line)
            update_health(self.engine, now)
            # Routing decides nothing new while no alert changed state, the silences are as they were and
            # no group timer has come due: then the pass is skipped (a steady fleet's common case).
            silences = silences_signature(self.engine)
            if changes.transitions or silences != self._route_silences or now >= self._route_quiet_until:
                routed = route_pass(self.engine, self.config, now)
                report.notifications = len(routed.notifications)
                self._route_quiet_until, self._route_silences = routed.quiet_until, silences
            if now - self._last_prune >= self.settings.prune_interval:
                prune(self.engine, now, raw_days=self.settings.raw_retention_days,
                      rollup_days=self.settings.rollup_retention_days, days=self.settings.retention_days)
                self._last_prune = now
        stats = deliver_due(self.engine, self.notifiers, self.id, now, policy=self.config.retry)
        report.delivered, report.failed = stats.delivered, stats.failed
        for error in stats.errors:
            log.warning("delivery: %s", error)
        report.seconds = time.perf_counter() - started
        return report

    def _run_tasks(self, now: float) -> None:
        """Each due task; one that fails is logged and tried again next interval, never fatal."""
        for task in self.tasks:
            if now - self._task_last.get(task.name, float("-inf")) < task.interval:
                continue
            self._task_last[task.name] = now
            try:
                task.run(self.engine, now)
            except Exception as exc:
                log.warning("task %s failed: %s: %s", task.name, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")

    def run(self, *, max_cycles: int | None = None) -> None:
        """Cycle every ``evaluation_interval`` until ``stop()``; a failing cycle (the store down) is
        logged and retried next time, never fatal."""
        cycles = 0
        origin = time.monotonic()
        interval = self.settings.evaluation_interval
        try:
            while not self._stop.is_set():
                try:
                    self.cycle()
                except Exception as exc:
                    log.warning("controller cycle failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0]
                                if str(exc) else "")
                cycles += 1
                if max_cycles is not None and cycles >= max_cycles:
                    break
                elapsed = time.monotonic() - origin
                self._stop.wait(interval - elapsed % interval)
        finally:
            if self.leader:
                try:
                    release(self.engine, LEASE, self.id)
                except Exception as exc:
                    log.debug("releasing the lease: %s", exc)

    def stop(self) -> None:
        self._stop.set()
