"""Placement advice over the live store: where a job of N GPUs should go now, with the reason for each option.

Candidates are the GPUs free now (newest sample recent, ok, under 5% utilization, no process), minus the
GPUs and nodes the controller judged unhealthy or unknown (``health_states``) and those being drained (an
acknowledged drain or reset recommendation, ``planner.recommend``). Options are ranked, best first, by

1. locality: one node before two, two before three (a job's collectives cross the network otherwise);
2. health: options with fewer degraded GPUs (throttling, a pending row remap) first;
3. speed class: options whose measured speed is at or under 95% of their model's fleet median (the
   benchmark rule's warn line) after the others;
4. fragmentation increase: how much idle capacity typical requests could no longer use after the
   placement (ΔF of ``planner.fragmentation``, Weng et al. ATC'23, in GPUs), against the store's recent
   job sizes (or 1, 2, 4 and 8 GPUs, equally likely, when it has no jobs);
5. measured speed: the slowest chosen GPU's median gemm/train benchmark result over its model's fleet
   median (a synchronous job runs at its slowest GPU's pace).

Within a node, the healthy and fastest free GPUs are chosen.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from db.alertviews import health_states
from db.models import GpuSample
from db.readmodels import Scope, bench_results, inventory, latest_gpu_samples, node_intervals
from db.rollups import IDLE_UTILIZATION
from db.stragglers import WARN_RATIO, comparable_key, direction
from planner.cluster import MILLI, make_requests
from planner.fragmentation import Workload, node_fragmentation, target_workload
from planner.jobs import load_jobs
from planner.recommend import (
    DEFAULT_WINDOW,
    acknowledgements,
    gpu_target,
    health_rule,
    xid_events,
    xid_repeat_rule,
)
from planner.whatif import demands_of

BENCH_LOOKBACK = 7 * 86400.0
JOB_LOOKBACK = 30 * 86400.0
SPEED_WORKLOADS = re.compile(r"gemm|train", re.IGNORECASE)
DEFAULT_SIZES = (1, 2, 4, 8)
MIN_FRESH_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class GpuCandidate:
    """One GPU as placement sees it: free now or not, and why not; health; measured speed."""

    node: str
    index: int
    model: str | None
    free: bool
    health: str  # healthy | degraded | unknown | unhealthy | draining | unjudged (no stored health)
    why: str | None = None  # the health reason, or why it is not free
    speed: float | None = None


@dataclass(frozen=True)
class Option:
    nodes: tuple[str, ...]
    gpus: tuple[tuple[str, int], ...]
    model: str | None
    degraded: int
    fragmentation_increase: float  # GPUs
    speed: float | None
    reasons: tuple[str, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        slow = self.speed is not None and self.speed <= WARN_RATIO
        return (len(self.nodes), self.degraded, slow, round(self.fragmentation_increase, 3), -(self.speed or 1.0),
                self.nodes)

    def describe(self) -> str:
        by_node: dict[str, list[int]] = defaultdict(list)
        for node, gpu in self.gpus:
            by_node[node].append(gpu)
        return " + ".join(f"{n} GPUs {','.join(map(str, g))}" for n, g in by_node.items())


@dataclass(frozen=True)
class Advice:
    gpus: int
    model: str | None
    at: float
    options: list[Option]
    excluded: dict[str, list[str]]  # node → why some or all of its GPUs are not offered
    workload: str  # what fragmentation was measured against
    notes: list[str] = field(default_factory=list)


# -- pure core ------------------------------------------------------------------------------------


def default_workload(max_gpus: int) -> Workload:
    sizes = [s for s in DEFAULT_SIZES if s <= max_gpus] or [1]
    return workload_from_sizes([float(s) for s in sizes])


def workload_from_sizes(gpus: Sequence[float]) -> Workload:
    """The target workload of job sizes (whole GPUs, or part of one GPU below 1)."""
    g = np.asarray(gpus, dtype=float)
    num, milli = demands_of(g)
    reqs = make_requests([str(i) for i in range(len(g))], np.zeros(len(g)), np.zeros(len(g)), num, milli)
    return target_workload(reqs, (), threshold=1.0)


def _fragmentation(free: np.ndarray, wl: Workload) -> np.ndarray:
    """F_n in GPUs of node states given as free milli-GPU per slot [C, G] (CPU and memory unconstrained)."""
    c = len(free)
    big = np.full(c, np.iinfo(np.int64).max // 4, dtype=np.int64)
    allowed = Workload(wl.cpu_milli, wl.memory_mib, wl.num_gpu, wl.gpu_milli,
                       np.broadcast_to((wl.gpu_milli > 0)[:, None], (len(wl), 2)).copy(), wl.popularity)
    return node_fragmentation(big, big, free, np.zeros(c, dtype=np.int64), allowed) / MILLI


def _order(gpus: Sequence[GpuCandidate]) -> list[GpuCandidate]:
    return sorted(gpus, key=lambda g: (g.health == "degraded", -(g.speed if g.speed is not None else 1.0), g.index))


def _speed_text(speed: float | None, model: str | None) -> str:
    if speed is None:
        return "no recent gemm/train benchmark results"
    return f"measured speed {speed:.0%} of the {model or 'fleet'} fleet median (slowest chosen GPU, gemm/train)"


def _option(picks: Mapping[str, list[GpuCandidate]], node_gpus: Mapping[str, list[GpuCandidate]],
            wl: Workload, node_speed: Mapping[str, float | None]) -> Option:
    delta, reasons = 0.0, []
    speeds = []
    for node, chosen in picks.items():
        slots = sorted(g.index for g in node_gpus[node])
        free = np.array([[MILLI if g.free and g.health in _USABLE else 0 for g in _by_index(node_gpus[node], slots)]])
        after = free.copy()
        for g in chosen:
            after[0, slots.index(g.index)] = 0
        before_f, after_f = _fragmentation(np.vstack([free, after]), wl)
        delta += float(after_f - before_f)
        speeds += [g.speed if g.speed is not None else node_speed.get(node) for g in chosen]
    chosen_all = [g for gs in picks.values() for g in gs]
    degraded = [g for g in chosen_all if g.health == "degraded"]
    model = chosen_all[0].model if chosen_all else None
    known = [s for s in speeds if s is not None]
    speed = min(known) if known else None
    nodes = tuple(picks)
    reasons.append("one node" if len(nodes) == 1 else f"spans {len(nodes)} nodes: no single node has "
                   f"{len(chosen_all)} usable free GPUs{'' if model is None else ' of ' + model}")
    reasons.append("every chosen GPU healthy" if not degraded else
                   "degraded: " + "; ".join(f"{gpu_target(g.node, g.index)} ({g.why})" for g in degraded))
    reasons.append(f"fragmentation {delta:+.2f} GPU (idle capacity typical requests could no longer use)")
    reasons.append(_speed_text(speed, model))
    return Option(nodes, tuple((g.node, g.index) for g in chosen_all), model, len(degraded), delta, speed,
                  tuple(reasons))


_USABLE = ("healthy", "degraded", "unjudged")


def _by_index(gpus: Sequence[GpuCandidate], slots: Sequence[int]) -> list[GpuCandidate]:
    at = {g.index: g for g in gpus}
    return [at[i] for i in slots]


def rank(candidates: Sequence[GpuCandidate], gpus: int, *, model: str | None = None,
         workload: Workload | None = None, top: int = 5,
         node_speed: Mapping[str, float | None] | None = None) -> tuple[list[Option], dict[str, list[str]]]:
    """Ranked options for a job of ``gpus`` whole GPUs over ``candidates``, and why GPUs were left out
    (per node). ``model``: a case-insensitive part of the GPU model name."""
    if gpus < 1:
        raise ValueError("a placement needs at least one GPU")
    node_gpus: dict[str, list[GpuCandidate]] = defaultdict(list)
    for g in candidates:
        node_gpus[g.node].append(g)
    wl = workload or default_workload(max((len(v) for v in node_gpus.values()), default=1))
    speeds = dict(node_speed or {})
    excluded: dict[str, list[str]] = defaultdict(list)
    usable: dict[str, list[GpuCandidate]] = {}
    for node, gs in sorted(node_gpus.items()):
        models = {g.model for g in gs}
        if model and not any(model.lower() in (m or "").lower() for m in models):
            excluded[node].append(f"GPU model {', '.join(sorted(m or '?' for m in models))}, not {model}")
            continue
        ok = []
        for g in sorted(gs, key=lambda g: g.index):
            if g.health not in _USABLE:
                excluded[node].append(f"GPU {g.index} {g.health}" + (f": {g.why}" if g.why else ""))
            elif not g.free:
                excluded[node].append(f"GPU {g.index} busy" + (f" ({g.why})" if g.why else ""))
            else:
                ok.append(g)
        usable[node] = _order(ok)
    singles = [_option({n: gs[:gpus]}, node_gpus, wl, speeds) for n, gs in usable.items() if len(gs) >= gpus]
    if singles:
        return sorted(singles, key=lambda o: o.key)[:top], dict(excluded)
    spread = _spread(usable, gpus, speeds)
    return ([_option(spread, node_gpus, wl, speeds)] if spread else []), dict(excluded)


def _spread(usable: Mapping[str, list[GpuCandidate]], gpus: int,
            speeds: Mapping[str, float | None]) -> dict[str, list[GpuCandidate]] | None:
    """The fewest nodes of one GPU model that together hold ``gpus`` usable GPUs (fullest nodes first,
    healthy and normal-speed nodes before the others)."""
    by_model: dict[str | None, list[str]] = defaultdict(list)
    for node, gs in usable.items():
        if gs:
            by_model[gs[0].model].append(node)
    best: dict[str, list[GpuCandidate]] | None = None
    for nodes in by_model.values():
        order = sorted(nodes, key=lambda n: (any(g.health == "degraded" for g in usable[n]),
                                             (speeds.get(n) or 1.0) <= WARN_RATIO, -len(usable[n]), n))
        picks: dict[str, list[GpuCandidate]] = {}
        left = gpus
        for n in order:
            if left <= 0:
                break
            picks[n] = usable[n][:left]
            left -= len(picks[n])
        if left <= 0 and (best is None or len(picks) < len(best)):
            best = picks
    return best


def relative_speeds(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[tuple[str, int], float], dict[str, float]]:
    """(per (node, GPU index), per node) speed: the median over comparable series (``db.stragglers``) of
    the median result over its fleet's median of the same series, inverted for lower-is-better metrics.
    Node-level results (no GPU) count for the node only."""
    series: dict[tuple[Any, ...], dict[tuple[str, int | None], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("status") != "ok" or r.get("value") is None or not SPEED_WORKLOADS.search(str(r["workload"])):
            continue
        if direction(r["metric"], r.get("unit")) is None:
            continue
        gpu = None if r.get("gpu_index") is None or _nan(r["gpu_index"]) else int(r["gpu_index"])
        series[comparable_key(r)][(r["node"], gpu)].append(float(r["value"]))
    per_gpu: dict[tuple[str, int], list[float]] = defaultdict(list)
    per_node: dict[str, list[float]] = defaultdict(list)
    for key, members in series.items():
        medians = {who: statistics.median(v) for who, v in members.items()}
        fleet = statistics.median(medians.values())
        if not fleet:
            continue
        better = direction(key[1], None) or 1
        for (node, gpu), m in medians.items():
            ratio = m / fleet if better > 0 else (fleet / m if m else math.inf)
            per_node[node].append(ratio)
            if gpu is not None:
                per_gpu[(node, gpu)].append(ratio)
    return ({k: statistics.median(v) for k, v in per_gpu.items()},
            {k: statistics.median(v) for k, v in per_node.items()})


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


# -- the store --------------------------------------------------------------------------------------


def store_workload(engine: Engine, now: float, max_gpus: int) -> tuple[Workload, str]:
    """The store's job sizes of the last 30 days (up to a node's GPUs), or the default sizes."""
    sizes = load_jobs(engine, now - JOB_LOOKBACK, now)["gpus"].dropna()
    sizes = sizes[(sizes > 0) & (sizes <= max_gpus)]
    if not len(sizes):
        return default_workload(max_gpus), "1, 2, 4 and 8 GPUs, equally likely (no jobs in the store)"
    return workload_from_sizes(sizes.to_list()), f"the sizes of {len(sizes):,} jobs of the last 30 days"


def draining(engine: Engine, now: float) -> tuple[set[str], set[tuple[str, int]]]:
    """Nodes and GPUs with an acknowledged drain or reset recommendation that still holds."""
    acks = acknowledgements(engine)
    if not acks:
        return set(), set()
    recs = health_rule(health_states(engine, Scope()), now) + xid_repeat_rule(
        xid_events(engine, now - DEFAULT_WINDOW, now))
    held = [r for r in recs if r.id in acks and r.node is not None]
    return ({r.node for r in held if r.gpu is None and r.node},
            {(r.node, int(r.gpu)) for r in held if r.gpu is not None and r.node})


def candidates(engine: Engine, now: float) -> tuple[list[GpuCandidate], dict[str, float], bool]:
    """Every GPU in the inventory as placement sees it at ``now``, each node's speed, and whether any
    health is stored."""
    inv = inventory(engine)
    latest = {s["gpu_id"]: s for s in latest_gpu_samples(engine, Scope(), now)}
    intervals = node_intervals(engine, now)
    health = health_states(engine, Scope())
    gpu_health = {h["entity_id"]: h for h in health if h["entity"] == "gpu"}
    node_down = {h["node"]: h for h in health if h["entity"] == "node" and h["state"] == "unhealthy"
                 and any(not str(r).startswith("GPU ") for r in h.get("reasons") or [])}
    drained_nodes, drained_gpus = draining(engine, now)
    gpu_speed, node_speed = relative_speeds(bench_results(engine, Scope(), now - BENCH_LOOKBACK, now))
    out = []
    for g in inv:
        node, index = g["node"], int(g["index"])
        s = latest.get(g["gpu_id"])
        fresh = max(MIN_FRESH_SECONDS, 3 * intervals.get(g["node_id"], 0.0))
        h = gpu_health.get(g["gpu_id"])
        state, why = (h["state"], "; ".join(map(str, h.get("reasons") or [])) or None) if h else ("unjudged", None)
        if node in node_down:
            state, why = "unhealthy", "node: " + "; ".join(map(str, node_down[node]["reasons"]))
        elif node in drained_nodes or (node, index) in drained_gpus:
            state, why = "draining", "drain acknowledged"
        free = False
        if s is None or now - s["ts"] > fresh:
            state, why = ("unknown", "no recent sample") if state in _USABLE else (state, why)
        elif s["status"] != "ok":
            state, why = ("unhealthy", f"status {s['status']}") if state in _USABLE else (state, why)
        else:
            util, procs = s["utilization_gpu_ratio"] or 0.0, s["process_count"] or 0
            free = util < IDLE_UTILIZATION and procs == 0
            if not free and state in _USABLE:
                why = f"{util:.0%} utilization, {procs} process{'es' if procs != 1 else ''}"
        out.append(GpuCandidate(node, index, g["model"], free, state, why, gpu_speed.get((node, index))))
    return out, node_speed, bool(health)


def newest_sample_time(engine: Engine) -> float | None:
    with engine.connect() as conn:
        return conn.execute(select(func.max(GpuSample.ts))).scalar()


def advise(engine: Engine, gpus: int, model: str | None = None, *, now: float | None = None, top: int = 5) -> Advice:
    """Placement advice for a job of ``gpus`` GPUs (of ``model``, a part of the model name) at ``now``."""
    now = time.time() if now is None else now
    cands, node_speed, judged = candidates(engine, now)
    per_node: dict[str, int] = defaultdict(int)
    for c in cands:
        per_node[c.node] += 1
    wl, described = store_workload(engine, now, max(per_node.values(), default=1))
    options, excluded = rank(cands, gpus, model=model, workload=wl, top=top, node_speed=node_speed)
    notes = []
    if not judged:
        notes.append("no stored health (the controller, 'gpufleet controller run', judges it): only each GPU's "
                     "newest sample says whether it is usable")
    if cands and all(c.health == "unknown" for c in cands):
        notes.append("no GPU reported recently: is the fleet reporting? (--at TIME advises on an earlier state)")
    if not options and cands:
        usable = sum(1 for c in cands if c.free and c.health in _USABLE)
        notes.append(f"no placement: {usable} usable free GPU{'s' if usable != 1 else ''} now, {gpus} needed"
                     + (f" of {model}" if model else ""))
    return Advice(gpus, model, now, options, excluded, described, notes)
