"""Health of every GPU and node (``health_states``): healthy, degraded, unknown or unhealthy, with
short reasons and the recommended action for the worst of them.

A GPU is

- **unhealthy**: a firing critical alert about it, a fatal event (catalogue-fatal XID, lost GPU,
  uncorrectable ECC, …) it has not been seen ok since (no ok sample or ``gpu_recovered`` event
  after it), its newest sample says ``lost``, or a row remap failed;
- **unknown**: no sample within max(3 sampling intervals, 60 s), or its node is down;
- **degraded**: a firing warning alert, an NVML error status, thermal / HW-slowdown / power-brake
  throttling (the SW power cap alone is a busy GPU at its limit, not a fault), a pending row remap;
- **healthy** otherwise. Info alerts (idle, power capped) are not health.

A node is the worst of its GPUs (each GPU's worst reason, prefixed ``GPU i:``) and its own
node-level alerts; a node whose agent stopped heartbeating is **unhealthy** ("agent heartbeat
missing"), its GPUs unknown. ``since`` is kept while the state stays the same.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Text, cast, delete, select, update

from alerts.conditions import Context, latest_samples, seen_ok_after
from alerts.event_rules import possibly_matching_xids, xid_info
from collectors.xid import classify
from db.engine import upsert
from db.models import Alert, Event, Gpu, HealthState, Node

STATES = ("healthy", "degraded", "unknown", "unhealthy")  # from best to worst
RANK = {s: i for i, s in enumerate(STATES)}
EVENT_LOOKBACK_SECONDS = 7 * 86400.0  # fatal events older than this no longer count
SAMPLE_LOOKBACK_SECONDS = 3600.0
DEGRADING_REASONS = 0x8 | 0x20 | 0x40 | 0x80  # HW slowdown, SW/HW thermal, power brake
NODE_DOWN_ACTION = "Check that the node is up and that its agent (gpufleet agent run) runs and reaches the store."


@dataclass(slots=True)
class Reason:
    state: str
    text: str
    action: str | None = None
    key: str = ""  # what it is about (``xid:79``, ``lost``, ``alert:gpu_lost``): one reason per key


@dataclass(slots=True)
class Verdict:
    node_id: int | None
    reasons: list[Reason] = field(default_factory=list)

    def add(self, reason: Reason) -> None:
        key = reason.key or reason.text
        if all((r.key or r.text) != key for r in self.reasons):
            self.reasons.append(reason)

    @property
    def state(self) -> str:
        return max((r.state for r in self.reasons), key=RANK.__getitem__, default="healthy")

    def worst(self) -> Reason | None:
        """The first reason of the worst state (with an action, when one of them has one)."""
        top = [r for r in self.reasons if r.state == self.state]
        return next((r for r in top if r.action), top[0] if top else None)


def assess(ctx: Context) -> tuple[dict[int, Verdict], dict[int, Verdict]]:
    """(per GPU id, per node id) verdicts at ``ctx.now``."""
    gpus = {g: Verdict(ref.node_id) for g, ref in ctx.gpus.items()}
    nodes = {n: Verdict(n) for n in ctx.nodes}
    for node_id, node in ctx.nodes.items():
        if node.is_down(ctx.now):
            nodes[node_id].add(Reason("unhealthy", "agent heartbeat missing", NODE_DOWN_ACTION, "node_down"))
    _fatal_events(ctx, gpus)
    latest = latest_samples(ctx, ["status", "error", "clock_event_reasons", "remapped_rows_pending",
                                  "remapped_rows_failure"], SAMPLE_LOOKBACK_SECONDS)
    for gpu_id, v in gpus.items():
        liveness = ctx.nodes.get(ctx.gpus[gpu_id].node_id)
        if liveness is not None and liveness.is_down(ctx.now):
            v.add(Reason("unknown", "node down: agent heartbeat missing", key="node_down"))
            continue
        s = latest.get(gpu_id)
        recent = max(60.0, 3 * liveness.interval) if liveness is not None else 60.0
        if s is None or ctx.now - s["ts"] > recent:
            v.add(Reason("unknown", "no recent data", key="stale"))
            continue
        if s["status"] == "lost":
            v.add(Reason("unhealthy", "GPU lost", classify(79).recommended_action, "lost"))
        elif s["status"] != "ok":
            v.add(Reason("degraded", f"NVML error: {s['error'] or s['status']}", key="error"))
        if s["remapped_rows_failure"]:
            v.add(Reason("unhealthy", "row remap failed", "Drain the GPU and replace it.", "remap"))
        elif s["remapped_rows_pending"]:
            v.add(Reason("degraded", "row remap pending", "Drain the GPU and reset it to apply the remap.", "remap"))
        reasons = int(s["clock_event_reasons"] or 0)
        if reasons & DEGRADING_REASONS:
            what = "thermal throttling" if reasons & (0x20 | 0x40) else "hardware slowdown"
            v.add(Reason("degraded", what, "Check the node's cooling and power delivery.", "throttle"))
    _alerts(ctx, gpus, nodes)
    for gpu_id, v in gpus.items():  # a node is the worst of its GPUs: each GPU's worst reason
        worst = v.worst()
        node_v = nodes.get(v.node_id) if v.node_id is not None else None
        if worst is None or node_v is None or worst.key == "node_down":
            continue
        node_v.add(Reason(worst.state, f"GPU {ctx.gpus[gpu_id].index}: {worst.text}", worst.action))
    return gpus, nodes


def _alerts(ctx: Context, gpus: dict[int, Verdict], nodes: dict[int, Verdict]) -> None:
    # Severity and XID are read out of the labels by the database (json_extract / ->>), and the
    # annotations are decoded only for non-XID alerts: a storm is thousands of firing alerts.
    q = select(Alert.rule, Alert.labels["severity"].as_string(), Alert.labels["xid"].as_string(),
               cast(Alert.annotations, Text), Alert.gpu_id, Alert.node_id).where(Alert.state == "firing")
    for rule, severity, xid, notes_json, gpu_id, node_id in ctx.conn.execute(q.order_by(Alert.starts_at)):
        target = gpus.get(gpu_id) if gpu_id is not None else nodes.get(node_id) if node_id is not None else None
        if target is None:
            continue
        state = {"critical": "unhealthy", "warning": "degraded"}.get(severity or "")
        if state is None:
            continue
        info = xid_info(xid) if xid else None
        action: str | None
        if info is not None:
            text, action = f"XID {xid} {info.mnemonic}", info.recommended_action
        else:
            notes = json.loads(notes_json) if notes_json else {}
            text, action = f"alert {rule}", (notes or {}).get("recommended_action") or (notes or {}).get("runbook")
        target.add(Reason(state, text, action or None, f"xid:{xid}" if xid else f"alert:{rule}"))


def _fatal_events(ctx: Context, gpus: dict[int, Verdict]) -> None:
    """Fatal events the GPU has not been seen ok since: the newest of each kind and code."""
    q = (select(Event.gpu_id, Event.ts, Event.kind, Event.code, Event.fatal, Event.recommended_action)
         .where(Event.gpu_id.is_not(None), Event.ts > ctx.now - EVENT_LOOKBACK_SECONDS, Event.ts <= ctx.now,
                (Event.fatal.is_(True)) | ((Event.kind == "xid") & possibly_matching_xids(True)))
         .order_by(Event.ts))
    newest: dict[tuple[int, str, str | None], Any] = {}
    for row in ctx.conn.execute(q):
        info = xid_info(row.code) if row.kind == "xid" else None
        if (info.fatal if info is not None else bool(row.fatal)) and row.gpu_id in gpus:
            newest[(row.gpu_id, row.kind, row.code)] = row
    recovered = seen_ok_after(ctx, [(row.gpu_id, row.ts) for row in newest.values()])
    # XIDs first: they say the most about what happened.
    for row in sorted(newest.values(), key=lambda r: (r.kind != "xid", r.ts)):
        if (row.gpu_id, row.ts) in recovered:
            continue
        info = xid_info(row.code) if row.kind == "xid" else None
        if info is not None:
            text, key = f"XID {row.code} {info.mnemonic}", f"xid:{row.code}"
        else:
            text = "GPU lost" if row.kind == "gpu_lost" else row.kind.replace("_", " ") + (
                f" ({row.code})" if row.code else "")
            key = "lost" if row.kind == "gpu_lost" else f"{row.kind}:{row.code}"
        action = row.recommended_action or (info.recommended_action if info else None)
        gpus[row.gpu_id].add(Reason("unhealthy", text, action, key))


def update_health(engine: Engine, now: float | None = None) -> dict[str, int]:
    """Recompute and store every GPU's and node's health; returns how many are in each state."""
    now = time.time() if now is None else now
    counts: dict[str, int] = defaultdict(int)
    with engine.begin() as conn:
        ctx = Context(conn, now)
        gpus, nodes = assess(ctx)
        old = {(r.entity, r.entity_id): r for r in conn.execute(select(HealthState))}
        rows = []
        for entity, verdicts in (("gpu", gpus), ("node", nodes)):
            for entity_id, v in verdicts.items():
                state = v.state
                counts[state] += 1
                prev = old.pop((entity, entity_id), None)
                worst = v.worst()
                row = {"entity": entity, "entity_id": entity_id, "node_id": v.node_id, "state": state,
                       "reasons": [r.text for r in v.reasons], "since": prev.since if prev is not None and
                       prev.state == state else now, "updated_at": now,
                       "recommended_action": worst.action if worst is not None else None}
                if prev is not None and (prev.node_id, prev.state, prev.reasons, prev.recommended_action,
                                         prev.since) == (row["node_id"], state, row["reasons"],
                                                         row["recommended_action"], row["since"]):
                    continue  # unchanged: only updated_at moves, for every row at once below
                rows.append(row)
        conn.execute(update(HealthState).values(updated_at=now))
        for start in range(0, len(rows), 500):
            stmt = upsert(conn, HealthState)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["entity", "entity_id"],
                set_={c: stmt.excluded[c] for c in ("node_id", "state", "reasons", "recommended_action", "since",
                                                     "updated_at")}), rows[start:start + 500])
        for entity, entity_id in old:  # GPUs and nodes no longer in the inventory
            conn.execute(delete(HealthState).where(HealthState.entity == entity, HealthState.entity_id == entity_id))
    return dict(counts)


def health(engine: Engine, entity: str | None = None) -> list[dict[str, Any]]:
    """Stored health, worst first: ``entity`` (gpu | node), ``entity_id``, ``node_id``, ``node``,
    ``gpu`` (index), ``uuid``, ``state``, ``reasons``, ``recommended_action``, ``since``,
    ``updated_at``. ``entity`` limits it to GPUs or nodes."""
    h = HealthState
    q = (select(h.entity, h.entity_id, h.node_id, Node.name.label("node"), Gpu.index.label("gpu"), Gpu.uuid,
                h.state, h.reasons, h.recommended_action, h.since, h.updated_at)
         .outerjoin(Node, Node.id == h.node_id)
         .outerjoin(Gpu, (Gpu.id == h.entity_id) & (h.entity == "gpu")))
    if entity is not None:
        q = q.where(h.entity == entity)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    rows.sort(key=lambda r: (-RANK.get(r["state"], 0), r["entity"] != "node", r["node"] or "",
                             -1 if r["gpu"] is None else r["gpu"]))
    return rows
