"""Operational recommendations: what to fix, drain, reclaim, resize or rebalance now, each with the numbers
behind it and what acting on it gains.

Every rule is a pure function over plain rows or frames (``*_rule``), fed by ``recommend`` from the store;
the CLI (``gpufleet plan recommend``) and the dashboard's Recommendations page both call ``recommend``, so
they list the same items. Kinds and their sources:

- **drain** / **reset**: unhealthy (or degraded, with a drain or reset action) GPUs and nodes from the stored
  health (``health_states``), the action split by what the XID catalogue says to do (a node-level action,
  such as power-cycling after XID 79, drains the node); and application XIDs that repeat on one GPU
  (``REPEATED_XIDS`` in the range), which the catalogue says to drain and diagnose. Gain: GPUs back.
- **idle**: GPUs allocated (a process on them) at under 5% utilization for at least ``IDLE_MIN_HOURS`` and
  at least half their allocated time. Gain: the idle-held GPU-hours of the range.
- **rightsize**: jobs that kept under 30% of the GPUs they held busy (utilization of their nodes' GPUs
  over their run, capped at what they held: co-located jobs can only make a job look busier, so the rule
  errs towards saying nothing). Gain: GPU-hours of the GPUs a right-sized request would not have held.
- **quota**: ``planner.quota`` over the jobs per partition (VC) and each VC's GPUs. Gain: GPUs moved.
- **sharing**: when many requests are for part of a GPU (``0 < gpus < 1``, e.g. openb ``gpu_milli``),
  a MIG or time-sliced pool. Gain: GPUs saved on average against giving each such request a whole GPU.
- **straggler**: benchmark series still failing ``db.stragglers``' rule after ``planner.stragglers``'
  streak length (the ``bench_slow`` events). Gain: the share of a GPU's pace that is missing.

A recommendation's ``id`` is a hash of its kind and target, so it stays the same while the finding
lasts: the dashboard links to it and operators acknowledge it (``acknowledge``, table
``recommendation_acks``).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from db.alertviews import health_states
from db.hostlist import expand_hostlist
from db.models import Event, Node, RecommendationAck
from db.readmodels import Scope, gpu_state_hours, inventory, latest_gpu_samples
from db.rollups import IDLE_UTILIZATION
from planner import stragglers
from planner.demand import demand_by_group, demand_from_jobs
from planner.jobs import load_jobs
from planner.quota import rebalance_frames

KINDS = ("drain", "reset", "idle", "rightsize", "quota", "sharing", "straggler")
SEVERITIES = ("critical", "warning", "info")
HOUR = 3600.0
DEFAULT_WINDOW = 7 * 86400.0
REPEATED_XIDS = 3  # the same non-fatal XID this often on one GPU in the range: drain and diagnose
IDLE_MIN_HOURS = 1.0
IDLE_MIN_SHARE = 0.5
RIGHTSIZE_RATIO = 0.30  # a job using less than this share of the GPUs it held
RIGHTSIZE_TARGET = 0.70  # the busy share a right-sized request is sized for
RIGHTSIZE_MIN_HOURS = 0.5
RIGHTSIZE_MAX_JOBS = 200  # newest jobs checked (each costs one query)
SHARING_MIN_REQUESTS = 5
SHARING_MIN_SHARE = 0.20
NODE_ACTION = re.compile(r"drain the node|power-cycle|restart the virtual machine", re.IGNORECASE)


@dataclass(frozen=True)
class Recommendation:
    """One finding. ``evidence`` holds the numbers it rests on; ``gain`` what acting on it is expected to
    win, in ``gain_unit`` (GPU-hours over the range, or GPUs); ``page``: the dashboard page that shows the
    evidence (node, failures, benchmarks, alerts, capacity)."""

    kind: str
    target: str
    title: str
    evidence: dict[str, Any]
    gain: float
    gain_unit: str
    action: str
    severity: str
    node: str | None = None
    gpu: int | None = None
    page: str = "node"
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    note: str | None = None

    @property
    def id(self) -> str:
        return rec_id(self.kind, self.target)

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, **{f: getattr(self, f) for f in self.__dataclass_fields__}}
        out["evidence"] = _plain(self.evidence)
        return out


def rec_id(kind: str, target: str) -> str:
    """The stable id of a recommendation: 16 hex digits of SHA-256 over its kind and target."""
    return hashlib.sha256(f"{kind}\x00{target}".encode()).hexdigest()[:16]


def gpu_target(node: str, gpu: int | None) -> str:
    return node if gpu is None else f"{node} GPU {int(gpu)}"


def _plain(value: Any) -> Any:
    """JSON-ready numbers (numpy scalars to Python, NaN to None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- drain and reset ------------------------------------------------------------------------------


def health_rule(health: Sequence[Mapping[str, Any]], now: float) -> list[Recommendation]:
    """Drain or reset recommendations from stored health rows (``db.alertviews.health_states``)."""
    by_id: dict[str, Recommendation] = {}
    for h in health:
        action = h.get("recommended_action") or ""
        if h["state"] == "unhealthy":
            severity = "critical"
        elif h["state"] == "degraded" and re.search(r"drain|reset", action, re.IGNORECASE):
            severity = "warning"
        else:
            continue
        reasons = list(h.get("reasons") or [])
        node, gpu = h.get("node") or f"node {h['node_id']}", h.get("gpu")
        if h["entity"] == "node":
            own = [r for r in reasons if not str(r).startswith("GPU ")]
            if not own:  # a node unhealthy through its GPUs: the GPU rows say what to do
                continue
            rec = _drain(node, None, severity, own, action or "Drain the node and find out why it is down.", 0,
                         h["since"], now)
        elif NODE_ACTION.search(action) or not action:
            rec = _drain(node, None, severity, [f"GPU {gpu}: {r}" for r in reasons], action or
                         "Drain the node and run its diagnostics.", 1, h["since"], now)
        elif re.search(r"reset", action, re.IGNORECASE):
            rec = _make("reset", node, gpu, severity, reasons, action, h["since"], now)
        else:
            rec = _drain(node, gpu, severity, reasons, action, 1, h["since"], now)
        by_id[rec.id] = _merge(by_id.get(rec.id), rec)
    return list(by_id.values())


def _make(kind: str, node: str, gpu: int | None, severity: str, reasons: list[str], action: str, since: float,
          now: float, gpus: int = 1) -> Recommendation:
    where = gpu_target(node, gpu)
    verb = {"drain": "Drain", "reset": "Reset"}[kind]
    return Recommendation(kind, where, f"{verb} {where}: {reasons[0] if reasons else 'unhealthy'}",
                          {"reasons": reasons, "since": since, "hours_in_state": (now - since) / HOUR,
                           "gpus_affected": gpus}, float(gpus), "GPUs", action, severity, node, gpu, "node")


def _drain(node: str, gpu: int | None, severity: str, reasons: list[str], action: str, gpus: int, since: float,
           now: float) -> Recommendation:
    return _make("drain", node, gpu, severity, reasons, action, since, now, gpus)


def _merge(old: Recommendation | None, new: Recommendation) -> Recommendation:
    """Two findings about one target (a node with two GPUs needing a power-cycle): one item, the worst
    severity, every reason, the GPUs added up."""
    if old is None:
        return new
    ev = dict(old.evidence)
    ev["reasons"] = list(dict.fromkeys([*ev.get("reasons", []), *new.evidence.get("reasons", [])]))
    ev["gpus_affected"] = ev.get("gpus_affected", 0) + new.evidence.get("gpus_affected", 0)
    ev["since"] = min(ev.get("since", math.inf), new.evidence.get("since", math.inf))
    severity = min(old.severity, new.severity, key=SEVERITIES.index)
    return replace(old, evidence=ev, gain=old.gain + new.gain, severity=severity)


def xid_repeat_rule(events: Sequence[Mapping[str, Any]], *, repeats: int = REPEATED_XIDS) -> list[Recommendation]:
    """Drain recommendations for non-fatal XIDs that repeat on one GPU (``events``: kind xid rows with
    node, gpu_index, code, ts, fatal, recommended_action)."""
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for e in events:
        if e["kind"] == "xid" and not e.get("fatal") and e.get("gpu_index") is not None:
            groups.setdefault((e["node"], int(e["gpu_index"]), str(e["code"])), []).append(e)
    out = []
    for (node, gpu, code), rows in sorted(groups.items()):
        if len(rows) < repeats:
            continue
        where = gpu_target(node, gpu)
        ts = [float(r["ts"]) for r in rows]
        action = rows[-1].get("recommended_action") or "Drain the GPU and run its diagnostics (dcgmi diag -r 3)."
        out.append(Recommendation(
            "drain", where, f"Drain {where}: XID {code} {len(rows)} times", {
                "xid": code, "count": len(rows), "first": min(ts), "last": max(ts),
                "reasons": [f"XID {code} repeated {len(rows)} times"], "gpus_affected": 1},
            1.0, "GPUs", action, "warning", node, gpu, "failures"))
    return out


# -- idle-held GPUs -------------------------------------------------------------------------------


def idle_rule(hours: Sequence[Mapping[str, Any]], names: Mapping[int, tuple[str, int]], held_now: set[int],
              range_hours: float) -> list[Recommendation]:
    """GPUs held idle (``db.readmodels.gpu_state_hours`` rows); ``names``: gpu_id → (node, index);
    ``held_now``: GPUs idle-held in their newest sample."""
    out = []
    for r in hours:
        idle = float(r.get("idle_allocated_hours") or 0.0)
        allocated = idle + float(r.get("busy_hours") or 0.0)
        if idle < IDLE_MIN_HOURS or idle < IDLE_MIN_SHARE * allocated or r["gpu_id"] not in names:
            continue
        node, gpu = names[r["gpu_id"]]
        where = gpu_target(node, gpu)
        now_held = r["gpu_id"] in held_now
        out.append(Recommendation(
            "idle", where, f"Reclaim {where}: held idle {idle:,.1f} h of the last {range_hours:,.0f} h", {
                "idle_held_hours": idle, "allocated_hours": allocated, "idle_share": idle / allocated,
                "mean_utilization": r.get("utilization"), "reported_hours": r.get("reported_hours"),
                "held_idle_now": now_held},
            idle, "GPU-hours", "Ask the owner of the process holding it (the Node page lists it) to release it, "
            "or reclaim it through the scheduler; it held the GPU at under 5% utilization.",
            "warning" if now_held else "info", node, gpu, "node"))
    return out


# -- jobs -------------------------------------------------------------------------------------------


def job_name(job: Mapping[str, Any]) -> str:
    cluster = job.get("cluster") or ""
    return f"job {cluster + '/' if cluster else ''}{job['external_id']}"


def rightsize_rule(job: Mapping[str, Any], used_gpus: float, hours: float, now: float) -> Recommendation | None:
    """A right-sizing recommendation for ``job`` (a ``planner.jobs`` row) that kept ``used_gpus``
    GPU-equivalents busy on average over ``hours``; None when it used enough."""
    held = float(job["gpus"])
    used = min(used_gpus, held)
    if held < 1 or hours < RIGHTSIZE_MIN_HOURS or used >= RIGHTSIZE_RATIO * held:
        return None
    size = max(1, math.ceil(used / RIGHTSIZE_TARGET - 1e-9))
    if size >= held:
        return None
    nodes = expand_hostlist(job.get("node_list"))
    running = pd.isna(job.get("end_ts")) or float(job["end_ts"]) > now
    name = job_name(job)
    return Recommendation(
        "rightsize", name, f"Right-size {name}: used {used / held:.0%} of its {held:g} GPUs", {
            "gpus": held, "used_gpus": used, "usage_ratio": used / held, "hours": hours, "suggested_gpus": size,
            "nodes": nodes, "user": job.get("user"), "account": job.get("account"), "running": running},
        (held - size) * hours, "GPU-hours",
        f"Request {size} GPU{'s' if size > 1 else ''} instead of {held:g}: it kept {used:.2f} GPUs busy on average.",
        "warning" if running else "info", nodes[0] if nodes else None, None, "node")


def job_usage(engine: Engine, nodes: Sequence[str], start: float, end: float) -> float:
    """GPU-equivalents busy on ``nodes`` over [start, end): Σ utilization × up-hours / hours."""
    rows = gpu_state_hours(engine, Scope(nodes=tuple(nodes)), start, end)
    busy = sum(float(r.get("utilization") or 0.0) * (float(r.get("reported_hours") or 0.0)
                                                   - float(r.get("down_hours") or 0.0)) for r in rows)
    return busy / ((end - start) / HOUR)


def quota_rule(jobs: pd.DataFrame, capacities: Mapping[str, float], start: float,
               end: float) -> list[Recommendation]:
    """Quota moves between partitions (VCs) with a known capacity, from ``planner.quota``."""
    jobs = jobs[jobs["partition"].isin(list(capacities))]
    if not len(jobs):
        return []
    frames = demand_by_group(jobs, start, end, key="partition")
    for vc, frame in frames.items():
        frame["capacity"] = float(capacities[vc])
    plan = rebalance_frames(frames)
    ev = {e.vc: e for e in plan.evidence}
    out = []
    for t in plan.transfers:
        give, get = ev[t.from_vc], ev[t.to_vc]
        out.append(Recommendation(
            "quota", f"{t.from_vc} -> {t.to_vc}", f"Move {t.gpus} GPUs of quota from {t.from_vc} to {t.to_vc}", {
                "from_capacity": give.capacity, "from_mean_allocation": give.mean_allocation,
                "from_p95_running": give.p95_running, "from_idle_gpu_hours": give.idle_gpu_hours,
                "to_capacity": get.capacity, "to_pending_share": get.pending_share, "to_mean_pending": get.mean_pending,
                "to_pending_gpu_hours": get.pending_gpu_hours, "hours": get.hours},
            float(t.gpus), "GPUs", f"Lower {t.from_vc}'s quota by {t.gpus} GPUs and raise {t.to_vc}'s by as many: "
            f"{t.to_vc} had GPUs pending {get.pending_share:.0%} of the time while {t.from_vc} kept "
            f"{give.mean_allocation or 0:.0%} of its GPUs allocated.", "warning", page="capacity"))
    served = {t.to_vc for t in plan.transfers}
    for vc, need in plan.need.items():
        if vc not in served and need > 0:
            e = ev[vc]
            out.append(Recommendation(
                "quota", vc, f"{vc} is starved and no VC has GPUs to spare", {
                    "capacity": e.capacity, "pending_share": e.pending_share, "mean_pending": e.mean_pending,
                    "pending_gpu_hours": e.pending_gpu_hours, "hours": e.hours, "needs_gpus": need},
                float(need), "GPUs", f"Add about {need} GPUs to {vc} (see the Capacity page for when).", "info",
                page="capacity"))
    return out


def sharing_rule(jobs: pd.DataFrame, start: float, end: float, where: str = "fleet") -> Recommendation | None:
    """A GPU-sharing pool when at least ``SHARING_MIN_SHARE`` of the GPU requests are for part of a GPU."""
    gpu_jobs = jobs[jobs["gpus"] > 0]
    partial = gpu_jobs[gpu_jobs["gpus"] < 1]
    if len(partial) < SHARING_MIN_REQUESTS or len(partial) < SHARING_MIN_SHARE * len(gpu_jobs):
        return None
    fraction = demand_from_jobs(partial, start, end)["running"]
    whole = demand_from_jobs(partial.assign(gpus=1.0), start, end)["running"]
    saved = float(whole.mean() - fraction.mean())
    pool = max(1, math.ceil(float(fraction.quantile(0.95)) - 1e-9))
    if saved <= 0:
        return None
    return Recommendation(
        "sharing", where, f"Share GPUs in {where}: {len(partial) / len(gpu_jobs):.0%} of GPU requests are for part of "
        "a GPU", {
            "gpu_requests": len(gpu_jobs), "partial_requests": len(partial),
            "partial_share": len(partial) / len(gpu_jobs), "median_fraction": float(partial["gpus"].median()),
            "mean_concurrent_partial": float(whole.mean()), "mean_partial_gpus": float(fraction.mean()),
            "p95_partial_gpus": float(fraction.quantile(0.95)), "pool_gpus": pool},
        saved, "GPUs", f"Serve requests for part of a GPU from a pool of about {pool} GPUs split with MIG (A100, "
        "H100, H200) or time-slicing (the device plugin's sharing setting), instead of a whole GPU each.", "info",
        page="capacity")


# -- stragglers -----------------------------------------------------------------------------------


def straggler_rule(findings: Iterable[stragglers.Finding]) -> list[Recommendation]:
    """Benchmark series whose latest run is still in a failing streak of ``stragglers.CONSECUTIVE`` runs."""
    worst: dict[str, stragglers.Finding] = {}
    for f in findings:
        if f.streak < stragglers.CONSECUTIVE:
            continue
        key = gpu_target(f.node, f.gpu_index)
        speed = f.worst.fleet.speed or 1.0
        if key not in worst or speed < (worst[key].worst.fleet.speed or 1.0):
            worst[key] = f
    out = []
    for where, f in sorted(worst.items()):
        c = f.worst
        speed = c.fleet.speed or 1.0
        out.append(Recommendation(
            "straggler", where, f"{where} runs {f.workload} at {speed:.0%} of the fleet's pace", {
                "workload": f.workload, "metric": c.metric, "unit": c.unit, "value": c.value,
                "fleet_median": c.fleet.fleet_median, "speed": speed, "peers": c.fleet.peers,
                "failing_runs_in_a_row": f.streak, "history_median": c.history_median, "bench_slow_event": f.event_uid,
                "last_run": f.started_at},
            1.0 - speed, "GPUs", stragglers.ACTION, "warning", f.node, f.gpu_index, "benchmarks"))
    return out


# -- the store --------------------------------------------------------------------------------------


def vc_capacities(engine: Engine) -> dict[str, float]:
    """GPUs per virtual cluster: each node's ``labels.partition``, else its cluster, summed over its GPUs."""
    rows = inventory(engine)
    with engine.connect() as conn:
        labels: dict[str, Any] = dict(conn.execute(select(Node.name, Node.labels)).all())
    out: dict[str, float] = {}
    for r in rows:
        vc = (labels.get(r["node"]) or {}).get("partition") or r["cluster"]
        if vc:
            out[vc] = out.get(vc, 0.0) + 1.0
    return out


def xid_events(engine: Engine, start: float, end: float) -> list[dict[str, Any]]:
    q = (select(Event.kind, Event.code, Event.ts, Event.fatal, Event.gpu_index, Event.recommended_action,
                Node.name.label("node"))
         .join(Node, Node.id == Event.node_id)
         .where(Event.kind == "xid", Event.ts >= start, Event.ts < end).order_by(Event.ts))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _idle(engine: Engine, start: float, end: float) -> list[Recommendation]:
    inv = inventory(engine)
    names = {r["gpu_id"]: (r["node"], r["index"]) for r in inv}
    held = {s["gpu_id"] for s in latest_gpu_samples(engine, Scope(), end)
            if s["status"] == "ok" and (s["utilization_gpu_ratio"] or 0.0) < IDLE_UTILIZATION
            and (s["process_count"] or 0) > 0}
    return idle_rule(gpu_state_hours(engine, Scope(), start, end), names, held, (end - start) / HOUR)


def _rightsize(engine: Engine, jobs: pd.DataFrame, start: float, end: float) -> list[Recommendation]:
    known = {r["node"] for r in inventory(engine)}
    ran = jobs[jobs["start_ts"].notna() & jobs["node_list"].notna() & (jobs["gpus"] >= 1)]
    out = []
    for job in ran.sort_values("start_ts", ascending=False).head(RIGHTSIZE_MAX_JOBS).to_dict("records"):
        nodes = expand_hostlist(job["node_list"])
        if not nodes or not set(nodes) <= known:
            continue
        lo = max(float(job["start_ts"]), start)
        hi = min(end if pd.isna(job["end_ts"]) else float(job["end_ts"]), end)
        if hi - lo < RIGHTSIZE_MIN_HOURS * HOUR:
            continue
        rec = rightsize_rule(job, job_usage(engine, nodes, lo, hi), (hi - lo) / HOUR, end)
        if rec is not None:
            out.append(rec)
    return out


def _findings(engine: Engine, now: float) -> list[stragglers.Finding]:
    with engine.connect() as conn:
        rows = stragglers.load(conn, now - stragglers.LOOKBACK - stragglers.PEER_WINDOW, now)
    latest: dict[str, stragglers.Finding] = {}
    for f in stragglers.evaluate(rows):
        if f.started_at >= now - stragglers.LOOKBACK:
            latest[f.series] = f
    return list(latest.values())


def recommend(engine: Engine, *, now: float | None = None, window: float = DEFAULT_WINDOW,
              kinds: Sequence[str] | None = None,
              capacities: Mapping[str, float] | None = None) -> list[Recommendation]:
    """Every recommendation over [now − window, now), most severe and largest gain first, with their
    acknowledgements. ``kinds`` limits the rules run; ``capacities`` (GPUs per partition) overrides
    ``vc_capacities`` for the quota rule."""
    now = time.time() if now is None else now
    start = now - window
    wanted = set(kinds or KINDS)
    out: list[Recommendation] = []
    if wanted & {"drain", "reset"}:
        out += health_rule(health_states(engine, Scope()), now)
        out += xid_repeat_rule(xid_events(engine, start, now))
    if "idle" in wanted:
        out += _idle(engine, start, now)
    if wanted & {"rightsize", "quota", "sharing"}:
        jobs = load_jobs(engine, start, now)
        if len(jobs) and "rightsize" in wanted:
            out += _rightsize(engine, jobs, start, now)
        if len(jobs) and "quota" in wanted:
            out += quota_rule(jobs, capacities if capacities is not None else vc_capacities(engine), start, now)
        if len(jobs) and "sharing" in wanted:
            for cluster, group in jobs.groupby(jobs["cluster"].fillna("")):
                rec = sharing_rule(group, start, now, str(cluster) or "fleet")
                out += [rec] if rec is not None else []
    if "straggler" in wanted:
        out += straggler_rule(_findings(engine, now))
    return with_acks(engine, [r for r in _dedupe(out) if r.kind in wanted])


def _dedupe(recs: Iterable[Recommendation]) -> list[Recommendation]:
    by_id: dict[str, Recommendation] = {}
    for r in recs:
        by_id[r.id] = _merge(by_id.get(r.id), r) if r.kind in ("drain", "reset") else by_id.get(r.id, r)
    return sorted(by_id.values(), key=lambda r: (SEVERITIES.index(r.severity), -r.gain, r.kind, r.target))


# -- acknowledgements -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    rec_id: str
    kind: str
    target: str
    actor: str
    ts: float
    note: str | None = field(default=None)


def acknowledgements(engine: Engine) -> dict[str, Ack]:
    with engine.connect() as conn:
        return {r.rec_id: Ack(r.rec_id, r.kind, r.target, r.actor, r.ts, r.note)
                for r in conn.execute(select(RecommendationAck))}


def with_acks(engine: Engine, recs: Sequence[Recommendation]) -> list[Recommendation]:
    acks = acknowledgements(engine)
    return [replace(r, acknowledged_by=a.actor, acknowledged_at=a.ts, note=a.note) if (a := acks.get(r.id)) else r
            for r in recs]


def acknowledge(engine: Engine, rec: Recommendation, actor: str, note: str | None = None,
                now: float | None = None) -> Ack:
    """Record that ``actor`` acknowledged ``rec`` (replacing an earlier acknowledgement of it). The caller
    audits it (``db.audit``)."""
    ack = Ack(rec.id, rec.kind, rec.target[:255], actor[:255], time.time() if now is None else now, note or None)
    with engine.begin() as conn:
        conn.execute(delete(RecommendationAck).where(RecommendationAck.rec_id == rec.id))
        conn.execute(insert(RecommendationAck), {"rec_id": ack.rec_id, "kind": ack.kind, "target": ack.target,
                                                 "actor": ack.actor, "ts": ack.ts, "note": ack.note})
    return ack
