"""Straggler detection over the benchmark history, and the ``bench_slow`` events it raises.

Each ok result of a run is judged by ``db.stragglers`` (the rule the dashboard and the alert use)
against the fleet as it stood around the run: every comparable GPU's (or node's) latest result within
``PEER_WINDOW`` either side, so a nightly round is compared with itself. Beside it goes the GPU's own
history, the median of its previous comparable runs: evidence of whether it got slow or always was.
A run is as bad as its worst metric. Two failing runs in a row of one series (same GPU, workload,
parameters and fingerprint) raise one ``bench_slow`` event; it is not raised again while the streak
lasts, and re-running ``refresh`` over the same data writes nothing new (the event id is derived
from the streak).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from db.engine import upsert
from db.models import BenchResult, BenchRun, Event, Gpu, Node
from db.stragglers import Verdict, comparable_key, direction, grade, worst

PEER_WINDOW = 12 * 3600.0  # a run's fleet: comparable results up to 12 h before or after it
HISTORY_RUNS = 10  # its own history: the median of up to this many previous comparable runs
CONSECUTIVE = 2  # failing runs in a row that raise a bench_slow event
LOOKBACK = 30 * 86400.0  # how far back refresh reads runs
ACTION = ("Look for throttling during the runs (power, thermal), a degraded PCIe or NVLink link, a lowered "
          "power limit or clocks; if none explains it, drain the GPU and run its diagnostics (dcgmi diag).")


@dataclass(frozen=True, slots=True)
class Check:
    """One metric of one run, against the fleet and against the GPU's own history."""

    metric: str
    unit: str | None
    value: float
    fleet: Verdict
    history_median: float | None  # median of the previous comparable runs; None: no history
    history_runs: int

    @property
    def severity(self) -> str | None:
        return self.fleet.severity

    def evidence(self) -> dict[str, Any]:
        f = self.fleet
        return {"metric": self.metric, "unit": self.unit, "value": self.value, "severity": f.severity,
                "fleet_median": f.fleet_median, "peers": f.peers, "speed": f.speed, "robust_z": _finite(f.z),
                "history_median": self.history_median, "history_runs": self.history_runs}


@dataclass(frozen=True, slots=True)
class Finding:
    """One run, judged: its worst severity, its checks and how many failing runs in a row (of its
    series) end with it."""

    run_id: int
    node_id: int
    node: str
    gpu_id: int | None
    gpu_index: int | None
    workload: str
    series: str  # hash of (node, GPU, workload, parameters, fingerprint)
    started_at: float
    severity: str | None
    checks: tuple[Check, ...]
    streak: int
    event_uid: str | None  # the bench_slow event of the streak this run is in (streak >= CONSECUTIVE)

    @property
    def worst(self) -> Check:
        """The check furthest behind the fleet (the one an event's message names)."""
        return min(self.checks, key=lambda c: c.fleet.speed if c.fleet.speed is not None else 2.0)

    @property
    def where(self) -> str:
        return self.node if self.gpu_index is None else f"{self.node} GPU {self.gpu_index}"


def _finite(x: float | None) -> float | None:
    return x if x is None or abs(x) != float("inf") else (1e9 if x > 0 else -1e9)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def evaluate(rows: Sequence[Mapping[str, Any]], *, window: float = PEER_WINDOW,
             history_runs: int = HISTORY_RUNS) -> list[Finding]:
    """Judge every run in ``rows`` (one row per ok result: ``run_id``, ``node_id``, ``node``,
    ``gpu_id``, ``gpu_index``, ``gpu_model``, ``workload``, ``metric``, ``unit``, ``value``,
    ``started_at``, ``config``, ``environment``). Pure: the store is read by ``refresh``."""
    judged = [r for r in rows if r["value"] is not None and direction(r["metric"], r["unit"]) is not None]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in sorted(judged, key=lambda r: (r["started_at"], r["run_id"])):
        groups[comparable_key(r)].append(r)
    checks: dict[int, list[Check]] = defaultdict(list)
    for members in groups.values():
        times = [r["started_at"] for r in members]
        fleets: dict[tuple[int, int], list[float]] = {}
        history: dict[tuple[int, int | None], list[float]] = defaultdict(list)
        for r in members:
            lo, hi = bisect.bisect_left(times, r["started_at"] - window), bisect.bisect_right(times, r["started_at"]
                                                                                              + window)
            if (lo, hi) not in fleets:  # a nightly round shares one window: computed once
                latest = {(m["node_id"], m["gpu_id"]): float(m["value"]) for m in members[lo:hi]}
                fleets[(lo, hi)] = list(latest.values())
            own = history[(r["node_id"], r["gpu_id"])]
            previous = own[-history_runs:]
            checks[r["run_id"]].append(Check(
                r["metric"], r["unit"], float(r["value"]),
                grade(float(r["value"]), fleets[(lo, hi)], direction(r["metric"], r["unit"])),
                statistics.median(previous) if previous else None, len(previous)))
            own.append(float(r["value"]))
    return _streaks(judged, checks)


def _streaks(rows: Sequence[Mapping[str, Any]], checks: Mapping[int, list[Check]]) -> list[Finding]:
    runs = {r["run_id"]: r for r in rows}
    by_series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    series_of = {}
    for run_id, r in runs.items():
        _workload, _metric, params, fp = comparable_key(r)
        series_of[run_id] = _hash(r["node_id"], r["gpu_id"], r["workload"], params, fp)[:16]
        by_series[series_of[run_id]].append(r)
    out = []
    for series, members in by_series.items():
        streak, first = 0, None
        for r in sorted(members, key=lambda r: (r["started_at"], r["run_id"])):
            mine = tuple(checks[r["run_id"]])
            severity = worst(*(c.severity for c in mine))
            streak = streak + 1 if severity == "fail" else 0
            first = r if streak == 1 else first if streak else None
            uid = _hash("bench_slow", series, first["run_id"])[:32] if first and streak >= CONSECUTIVE else None
            out.append(Finding(r["run_id"], r["node_id"], r["node"], r["gpu_id"], r["gpu_index"], r["workload"],
                               series, r["started_at"], severity, mine, streak, uid))
    return sorted(out, key=lambda f: (f.started_at, f.run_id))


def load(conn: Connection, since: float, until: float) -> list[dict[str, Any]]:
    """Every ok result of the ok runs started in [since, until], with its run, node and GPU."""
    gpu = func.coalesce(BenchResult.gpu_id, BenchRun.gpu_id)
    q = (select(BenchRun.id.label("run_id"), BenchRun.node_id, Node.name.label("node"), gpu.label("gpu_id"),
                Gpu.index.label("gpu_index"), Gpu.model.label("gpu_model"), BenchRun.workload, BenchResult.metric,
                BenchResult.unit, BenchResult.value, BenchRun.started_at, BenchRun.config, BenchRun.environment)
         .join(BenchRun, BenchRun.id == BenchResult.run_id).join(Node, Node.id == BenchRun.node_id)
         .outerjoin(Gpu, Gpu.id == gpu)
         .where(BenchRun.status == "ok", BenchRun.started_at >= since, BenchRun.started_at <= until,
                BenchResult.value.is_not(None))
         .order_by(BenchRun.started_at, BenchResult.id))
    return [dict(r._mapping) for r in conn.execute(q)]


def event_row(f: Finding, streak_runs: Sequence[Finding]) -> dict[str, Any]:
    """The ``events`` row for the streak whose CONSECUTIVE-th failing run is ``f``."""
    c = f.worst
    v = c.fleet
    own = (f"; its own median over {c.history_runs} earlier runs is {c.history_median:.4g}"
           if c.history_median is not None else "")
    message = (f"{f.where}: {f.workload} ran at {v.speed:.0%} of the fleet's pace for {len(streak_runs)} runs in "
               f"a row ({c.metric} {c.value:.4g} {c.unit or ''} against a median of {v.fleet_median:.4g} over "
               f"{v.peers} comparable results, robust z {v.z:.1f}{own})")
    return {"uid": f.event_uid, "ts": f.started_at, "node_id": f.node_id, "gpu_id": f.gpu_id,
            "gpu_index": f.gpu_index, "kind": "bench_slow", "code": f.workload[:64], "severity": "warning",
            "category": "gpu-hardware" if f.gpu_id is not None else "host", "fatal": False, "message": message,
            "recommended_action": ACTION, "source": "planner",
            "details": {"series": f.series, "workload": f.workload, "runs": [r.run_id for r in streak_runs],
                        "checks": [[c.evidence() for c in r.checks if c.severity] for r in streak_runs]}}


def refresh(engine: Engine, now: float | None = None, lookback: float = LOOKBACK) -> list[Finding]:
    """Judge the runs of the last ``lookback`` seconds, write a ``bench_slow`` event for each streak
    of CONSECUTIVE failing runs that has none yet, and return the latest run of every series."""
    now = time.time() if now is None else now
    with engine.begin() as conn:
        findings = evaluate(load(conn, now - lookback - PEER_WINDOW, now))
        findings = [f for f in findings if f.started_at >= now - lookback]
        rows = _new_events(conn, findings, now - 2 * lookback)
        if rows:
            conn.execute(upsert(engine, Event).on_conflict_do_nothing(index_elements=["uid"]), rows)
    latest: dict[str, Finding] = {}
    for f in findings:
        latest[f.series] = f
    return sorted(latest.values(), key=lambda f: (f.node, f.gpu_index if f.gpu_index is not None else -1, f.workload))


def _new_events(conn: Connection, findings: Sequence[Finding], since: float) -> list[dict[str, Any]]:
    """Event rows for streaks without an event: none with the streak's uid, and none for the series
    since its last passing run (a streak that began before the lookback has its event already)."""
    known = {uid: (details or {}).get("series") for uid, details in conn.execute(
        select(Event.uid, Event.details).where(Event.kind == "bench_slow", Event.ts >= since))}
    covered = set(known.values())
    out: list[dict[str, Any]] = []
    runs: dict[str, list[Finding]] = defaultdict(list)
    seen_pass: set[str] = set()
    for f in findings:
        if f.streak == 0:
            seen_pass.add(f.series)
            runs[f.series] = []
            continue
        runs[f.series].append(f)
        if f.streak != CONSECUTIVE or f.event_uid in known:
            continue
        if f.series in covered and f.series not in seen_pass:
            continue  # the streak began before the window (no passing run in it), and its event is stored
        out.append(event_row(f, list(runs[f.series])))
    return out
