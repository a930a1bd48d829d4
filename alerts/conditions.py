"""What rule evaluation produces (``Condition``) and what every rule kind reads once per cycle
(``Context``: the GPU inventory and node liveness), shared by the evaluators of each kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Connection, func, select, text

from alerts import templates
from alerts.rules import Rule
from db.models import Gpu, GpuSample, Heartbeat, Node

# A series whose newest sample is older than this is stale: its conditions are gone (Prometheus'
# lookback delta).
STALE_SECONDS = 300.0
# Heartbeats this far back give each node's sampling interval and its last heartbeat.
HEARTBEAT_LOOKBACK_SECONDS = 3600.0
INTERVAL_LOOKBACK_SECONDS = 900.0  # a silent node's interval: from its heartbeats this long before its last
DEFAULT_INTERVAL_SECONDS = 10.0  # the agent's default, when heartbeats cannot tell


@dataclass(slots=True)
class Condition:
    """One rule true for one thing (GPU, node, GPU x workload, …) now.

    ``since`` is when the condition began, computed from the data (not from when the controller
    first saw it), so ``for`` timers survive a controller restart.
    """

    rule: Rule
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    since: float
    node_id: int | None
    gpu_id: int | None


@dataclass(frozen=True, slots=True)
class GpuRef:
    gpu_id: int
    node_id: int
    index: int | None
    uuid: str
    model: str | None
    node: str
    first_seen: float


@dataclass(frozen=True, slots=True)
class NodeLiveness:
    node_id: int
    name: str
    last_heartbeat: float | None  # newest heartbeat at or before now (None: none in the lookback)
    interval: float  # seconds between heartbeats
    first_seen: float

    def down_after(self, intervals: float = 3.0, at_least: float = 60.0) -> float:
        """Seconds without a heartbeat after which the node counts as down."""
        return max(intervals * self.interval, at_least)

    def is_down(self, now: float, intervals: float = 3.0, at_least: float = 60.0) -> bool:
        last = self.last_heartbeat if self.last_heartbeat is not None else now - HEARTBEAT_LOOKBACK_SECONDS
        return now - last > self.down_after(intervals, at_least)


@dataclass
class Context:
    """One evaluation cycle: a connection, ``now``, and what several rules need (loaded once)."""

    conn: Connection
    now: float
    _gpus: dict[int, GpuRef] | None = None
    _nodes: dict[int, NodeLiveness] | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # what a rule kind loads once per cycle

    @property
    def gpus(self) -> dict[int, GpuRef]:
        """The inventory: every GPU known at ``now``, by id."""
        if self._gpus is None:
            q = (select(Gpu.id, Gpu.node_id, Gpu.index, Gpu.uuid, Gpu.model, Node.name, Gpu.first_seen)
                 .join(Node, Node.id == Gpu.node_id).where(Gpu.first_seen <= self.now))
            self._gpus = {r[0]: GpuRef(*r) for r in self.conn.execute(q)}
        return self._gpus

    @property
    def nodes(self) -> dict[int, NodeLiveness]:
        """Every node known at ``now`` with its newest heartbeat and sampling interval."""
        if self._nodes is None:
            hb = Heartbeat
            stats: dict[int, tuple[int, float, float]] = {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute(
                select(hb.node_id, func.count(), func.min(hb.ts), func.max(hb.ts))
                .where(hb.ts > self.now - HEARTBEAT_LOOKBACK_SECONDS, hb.ts <= self.now)
                .group_by(hb.node_id))}
            nodes = self.conn.execute(select(Node.id, Node.name, Node.first_seen, Node.last_seen)
                                      .where(Node.first_seen <= self.now)).all()
            # A node silent for the whole lookback: its last_seen (its newest batch) says since when,
            # and the heartbeats before that its interval. (last_seen is later only when evaluating
            # the past; then the last heartbeat is unknown.)
            silent = {n for n, _, _, seen in nodes if n not in stats and seen <= self.now - HEARTBEAT_LOOKBACK_SECONDS}
            if silent:
                stats.update({r[0]: (r[1], r[2], r[3]) for r in self.conn.execute(
                    select(hb.node_id, func.count(), func.min(hb.ts), func.max(hb.ts))
                    .join(Node, Node.id == hb.node_id)
                    .where(hb.node_id.in_(silent), hb.ts > Node.last_seen - INTERVAL_LOOKBACK_SECONDS,
                           hb.ts <= Node.last_seen)
                    .group_by(hb.node_id))})
            self._nodes = {}
            for node_id, name, first_seen, _seen in nodes:
                interval, last = DEFAULT_INTERVAL_SECONDS, None
                if node_id in stats:
                    n, lo, last = stats[node_id]
                    if n > 1 and last > lo:
                        interval = (last - lo) / (n - 1)
                self._nodes[node_id] = NodeLiveness(node_id, name, last, interval, first_seen)
        return self._nodes

    def node_name(self, node_id: int) -> str:
        node = self.nodes.get(node_id)
        return node.name if node else str(node_id)

    # -- building conditions ----------------------------------------------------------------------

    def condition(self, rule: Rule, *, since: float, value: float | None, gpu_id: int | None = None,
                  node_id: int | None = None, gpu_index: int | None = None, labels: dict[str, str] | None = None,
                  context: dict[str, Any] | None = None) -> Condition:
        """A condition of ``rule`` about a GPU (``gpu_id``) or a node (``node_id``), with the
        standard labels and its annotations rendered. Conditions repeat cycle after cycle: one built
        from the same rule, thing, values and context is remembered and returned again (they are
        never modified)."""
        ref = self.gpus.get(gpu_id) if gpu_id is not None else None
        if ref is not None:
            node_id = ref.node_id
            gpu_index = ref.index if ref.index is not None else gpu_index
        start = min(since, self.now)
        try:
            key = (id(rule), ref, node_id, None if ref is not None or node_id is None else self.node_name(node_id),
                   gpu_index, gpu_id, value, start, tuple(labels.items()) if labels else (),
                   tuple(context.items()) if context else ())
            found = _CONDITIONS.get(key)
        except TypeError:  # an unhashable context value: build it afresh
            key, found = None, None
        if found is not None and found.rule is rule:
            return found
        made = self._build(rule, ref, start, value, node_id, gpu_id, gpu_index, labels, context)
        if key is not None:
            if len(_CONDITIONS) >= _CONDITIONS_CACHE:
                _CONDITIONS.clear()
            _CONDITIONS[key] = made
        return made

    def _build(self, rule: Rule, ref: GpuRef | None, start: float, value: float | None, node_id: int | None,
               gpu_id: int | None, gpu_index: int | None, labels: dict[str, str] | None,
               context: dict[str, Any] | None) -> Condition:
        out = {"alertname": rule.name, "severity": rule.severity}
        if node_id is not None:
            out["node"] = ref.node if ref is not None else self.node_name(node_id)
        if gpu_index is not None:
            out["gpu"] = str(gpu_index)
        if ref is not None:
            out["uuid"] = ref.uuid
            if ref.model:
                out["model"] = ref.model
        out.update(labels or {})
        out.update(rule.labels)
        ctx: dict[str, Any] = {"alertname": rule.name, "severity": rule.severity, "node": out.get("node"),
                               "gpu": out.get("gpu"), "uuid": out.get("uuid"), "model": out.get("model"),
                               "value": value, "for": templates.duration(rule.for_seconds)}
        ctx.update(context or {})
        annotations = {k: templates.render(t, ctx) for k, t in rule.annotations.items()}
        return Condition(rule, out, annotations, value, start, node_id, gpu_id)


_CONDITIONS: dict[tuple[Any, ...], Condition] = {}
_CONDITIONS_CACHE = 100_000
def numeric(column: str, alias: str = "") -> str:
    """SQL for a gpu_samples column as a number (booleans as 0/1, which PostgreSQL needs spelled
    out), optionally qualified by a table alias. ``column`` is a validated column name."""
    col = GpuSample.__table__.columns[column]
    name = f"{alias}.{column}" if alias else column
    return f"CAST({name} AS INTEGER)" if isinstance(col.type, Boolean) else name


def latest_samples(ctx: Context, columns: Sequence[str], lookback: float) -> dict[int, dict[str, Any]]:
    """Each GPU's newest sample within ``lookback`` of ``now``: ``ts`` and ``columns``. One index
    seek per GPU of the inventory (not a scan of the fleet's window)."""
    cols = "".join(f", s.{c}" for c in columns)
    sql = f"""
        WITH n AS MATERIALIZED (
            SELECT g.id AS gpu_id, (SELECT MAX(t.ts) FROM gpu_samples t WHERE t.gpu_id = g.id
                                    AND t.ts > :lo AND t.ts <= :now) AS last_ts
            FROM gpus g WHERE g.first_seen <= :now
        )
        SELECT n.gpu_id, s.ts{cols} FROM n CROSS JOIN gpu_samples s WHERE s.gpu_id = n.gpu_id AND s.ts = n.last_ts
    """
    rows = ctx.conn.execute(text(sql), {"lo": ctx.now - lookback, "now": ctx.now})
    return {r[0]: dict(r._mapping) for r in rows}


def seen_ok_after(ctx: Context, marks: Sequence[tuple[int, float]]) -> set[tuple[int, float]]:
    """The (GPU id, time) marks after which, by ``now``, the GPU was seen ok: an ok sample or a
    ``gpu_recovered`` event. One statement for up to 200 marks (each an index seek or two)."""
    out: set[tuple[int, float]] = set()
    items = list(dict.fromkeys(marks))
    for start in range(0, len(items), 200):
        part = items[start:start + 200]
        params: dict[str, Any] = {"now": ctx.now}
        selects = []
        for n, (gpu_id, ts) in enumerate(part):
            params[f"g{n}"], params[f"t{n}"] = gpu_id, ts
            selects.append(
                f"SELECT {n} WHERE EXISTS (SELECT 1 FROM gpu_samples s WHERE s.gpu_id = :g{n} "
                f"AND s.ts > :t{n} AND s.ts <= :now AND s.status = 'ok') OR EXISTS (SELECT 1 FROM events e "
                f"WHERE e.gpu_id = :g{n} AND e.kind = 'gpu_recovered' AND e.ts > :t{n} AND e.ts <= :now)")
        out.update(part[r[0]] for r in ctx.conn.execute(text(" UNION ALL ".join(selects)), params))
    return out
