"""``absence`` rules: what should report and does not.

``target: node``: the node's newest heartbeat is older than max(``intervals`` x its sampling
interval, ``at_least``); the interval comes from its heartbeats of the last hour. ``target: gpu``:
a GPU of the inventory (``gpus``) sent no ok sample for ``window`` while its node is up (a node
that is down is ``node_down``'s alert, not one per GPU).
"""

from __future__ import annotations

from sqlalchemy import text

from alerts.conditions import HEARTBEAT_LOOKBACK_SECONDS, Condition, Context
from alerts.rules import Absence, Rule
from alerts.templates import duration

# How far back the last ok sample of a missing GPU is looked for (for ``since`` and ``value``).
MISSING_LOOKBACK_SECONDS = 86400.0


def absence(ctx: Context, rule: Rule) -> list[Condition]:
    spec = rule.spec
    assert isinstance(spec, Absence)
    return node_down(ctx, rule, spec) if spec.target == "node" else gpu_missing(ctx, rule, spec)


def node_down(ctx: Context, rule: Rule, spec: Absence) -> list[Condition]:
    out = []
    for node in ctx.nodes.values():
        if not node.is_down(ctx.now, spec.intervals, spec.at_least):
            continue
        last = node.last_heartbeat
        limit = node.down_after(spec.intervals, spec.at_least)
        began = (last if last is not None else max(node.first_seen, ctx.now - HEARTBEAT_LOOKBACK_SECONDS)) + limit
        silent = None if last is None else ctx.now - last
        out.append(ctx.condition(rule, node_id=node.node_id, since=began, value=silent, context={
            "threshold": limit, "interval": node.interval,
            "last_seen": "over an hour ago" if last is None else f"{silent:.0f} s ago"}))
    return out


def gpu_missing(ctx: Context, rule: Rule, spec: Absence) -> list[Condition]:
    lo = ctx.now - spec.window
    reporting = {r[0] for r in ctx.conn.execute(text(
        "SELECT g.id FROM gpus g WHERE EXISTS (SELECT 1 FROM gpu_samples s WHERE s.gpu_id = g.id "
        "AND s.ts > :lo AND s.ts <= :now AND s.status = 'ok')"), {"lo": lo, "now": ctx.now})}
    missing = [g for g in ctx.gpus.values()
               if g.gpu_id not in reporting and g.first_seen <= lo
               and g.node_id in ctx.nodes and not ctx.nodes[g.node_id].is_down(ctx.now)]
    if not missing:
        return []
    ids = ", ".join(str(int(g.gpu_id)) for g in missing)
    last_ok: dict[int, float] = dict(ctx.conn.execute(text(
        f"SELECT gpu_id, MAX(ts) FROM gpu_samples WHERE gpu_id IN ({ids}) AND status = 'ok' "
        "AND ts > :lo AND ts <= :hi GROUP BY gpu_id"),
        {"lo": ctx.now - MISSING_LOOKBACK_SECONDS, "hi": lo}).all())
    out = []
    for g in missing:
        last = last_ok.get(g.gpu_id)
        began = (last if last is not None else max(g.first_seen, ctx.now - MISSING_LOOKBACK_SECONDS)) + spec.window
        out.append(ctx.condition(rule, gpu_id=g.gpu_id, since=began,
                                 value=None if last is None else ctx.now - last, context={
                                     "threshold": spec.window, "window": duration(spec.window),
                                     "last_seen": "not within a day" if last is None
                                     else f"{ctx.now - last:.0f} s ago"}))
    return out
