"""``event`` rules: hardware and software events (XIDs, lost GPUs, ECC, thermal, …) as alerts.

One query reads the matching events of the lookback; they are grouped per GPU (or node, for
node-level events) and per kind and code, so XID 79 and XID 48 on one GPU are two alerts. A group
triggers when ``count`` of its events fall within ``window``. The condition then holds for
``resolve_after`` after the last trigger, and, for sticky rules (``until_recovered``), until the GPU
is seen ok again: an ok sample or a ``gpu_recovered`` event newer than the trigger (node-level
events: a newer heartbeat). One more statement finds those recoveries for every candidate at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import or_, select, text

from alerts.conditions import Condition, Context
from alerts.rules import EventMatch, Rule
from alerts.templates import duration
from collectors.xid import XidInfo, catalogue, classify
from db.models import Event

_COLUMNS = (Event.id, Event.ts, Event.node_id, Event.gpu_id, Event.gpu_index, Event.kind, Event.code,
            Event.severity, Event.category, Event.fatal, Event.message, Event.recommended_action)



RECOVERY_CHUNK = 200  # candidates per recovery query

@dataclass(slots=True)
class _Group:
    node_id: int
    gpu_id: int | None
    gpu_index: int | None
    kind: str
    code: str | None
    events: list[Any]
    triggers: list[int]  # indexes into events of the events that completed ``count`` within ``window``


@lru_cache(maxsize=4096)
def xid_info(code: str | None) -> XidInfo | None:
    """The catalogue entry of an XID event's code; None when the code is not a number."""
    try:
        return classify(int(code)) if code is not None else None
    except ValueError:
        return None


def possibly_matching_xids(fatal: bool | None, resolutions: tuple[str, ...] = ()) -> Any:
    """A SQL condition on XID event rows that keeps every row whose catalogue entry could match
    ``fatal`` and ``resolutions`` (and every row whose code the catalogue does not know, which the
    Python check then decides): a pre-filter, so a storm of application XIDs is not read by the
    rules about fatal ones."""
    known = catalogue()
    wanted = [str(code) for code, info in known.items()
              if (fatal is None or info.fatal == fatal) and (not resolutions or info.resolution in resolutions)]
    return or_(Event.code.is_(None), Event.code.in_(wanted), Event.code.not_in([str(c) for c in known]))


def _matches(spec: EventMatch, row: Any) -> bool:
    info = xid_info(row.code) if row.kind == "xid" else None
    if spec.fatal is not None:
        fatal = info.fatal if info is not None else bool(row.fatal)
        if fatal != spec.fatal:
            return False
    if spec.resolutions and (info is None or info.resolution not in spec.resolutions):
        return False
    return True


def event(ctx: Context, rule: Rule) -> list[Condition]:
    spec = rule.spec
    assert isinstance(spec, EventMatch)
    hold = spec.max_age if spec.until_recovered else max(spec.window, spec.resolve_after)
    groups: dict[tuple[Any, ...], _Group] = {}
    for row in _events(ctx, spec, ctx.now - hold - spec.window):
        if not _matches(spec, row):
            continue
        key = (row.node_id, row.gpu_id, row.gpu_index if row.gpu_id is None else None, row.kind, row.code)
        if key not in groups:
            groups[key] = _Group(row.node_id, row.gpu_id, key[2], row.kind, row.code, [], [])
        g = groups[key]
        g.events.append(row)
        first = len(g.events) - spec.count
        if first >= 0 and row.ts - g.events[first].ts <= spec.window:
            g.triggers.append(len(g.events) - 1)
    candidates = [g for g in groups.values() if g.triggers and g.events[g.triggers[-1]].ts > ctx.now - hold]
    recoveries = _recoveries(ctx, candidates) if spec.until_recovered else {}
    out = []
    for n, g in enumerate(candidates):
        last = g.events[g.triggers[-1]].ts
        before, after = recoveries.get(n, (None, None))
        held = ctx.now - last < spec.resolve_after
        if not held and not (spec.until_recovered and after is None):
            continue
        j = _episode_start(g, spec, before)
        start = g.triggers[j] - spec.count + 1
        out.append(_condition(ctx, rule, g, since=g.events[g.triggers[j]].ts, count=len(g.events) - start))
    return out


def _events(ctx: Context, spec: EventMatch, lo: float) -> list[Any]:
    """The events of ``spec``'s kinds (and codes, severities, and XIDs that may match its fatality or
    resolutions) in (``lo``, now], oldest first."""
    q = select(*_COLUMNS).where(Event.ts > lo, Event.ts <= ctx.now, Event.kind.in_(spec.kinds))
    if spec.fatal is not None or spec.resolutions:
        q = q.where(or_(Event.kind != "xid", possibly_matching_xids(spec.fatal, spec.resolutions)))
    if spec.codes:
        q = q.where(Event.code.in_(spec.codes))
    if spec.severities:
        q = q.where(Event.severity.in_(spec.severities))
    return list(ctx.conn.execute(q.order_by(Event.ts, Event.id)))


def _episode_start(g: _Group, spec: EventMatch, recovered_before_last: float | None) -> int:
    """The first trigger from which the condition held without a break up to the last trigger:
    consecutive triggers closer than ``resolve_after``, or (sticky) with no recovery between."""
    j = len(g.triggers) - 1
    while j > 0:
        prev, cur = g.events[g.triggers[j - 1]].ts, g.events[g.triggers[j]].ts
        if cur - prev < spec.resolve_after or (
                spec.until_recovered and (recovered_before_last is None or recovered_before_last <= prev)):
            j -= 1
            continue
        break
    return j


def _recoveries(ctx: Context, groups: list[_Group]) -> dict[int, tuple[float | None, float | None]]:
    """Per candidate (by position in ``groups``): the newest recovery between its first and last
    trigger, and the newest one after its last trigger (None: none)."""
    out: dict[int, tuple[float | None, float | None]] = {}
    candidates: list[tuple[int, int, float, float]] = []
    for n, g in enumerate(groups):
        first, last = g.events[g.triggers[0]].ts, g.events[g.triggers[-1]].ts
        if g.gpu_id is None:  # a node-level event: the node reporting again is its recovery
            hb = ctx.nodes.get(g.node_id)
            seen = hb.last_heartbeat if hb is not None else None
            out[n] = (None, seen if seen is not None and seen > last else None)
            continue
        candidates.append((n, g.gpu_id, first, last))
    # One statement per 200 candidates (SQLite allows 500 terms in a compound SELECT, and a mass
    # failure, XID 79 on hundreds of GPUs, is exactly when this must not fail).
    for start in range(0, len(candidates), RECOVERY_CHUNK):
        params: dict[str, Any] = {"now": ctx.now}
        rows = []
        for n, gpu_id, first, last in candidates[start:start + RECOVERY_CHUNK]:
            params.update({f"g{n}": gpu_id, f"f{n}": first, f"l{n}": last})
            rows.append(f"SELECT {n}, CAST(:g{n} AS BIGINT), CAST(:f{n} AS DOUBLE PRECISION), "
                        f"CAST(:l{n} AS DOUBLE PRECISION)")
        sql = f"""
            WITH c(n, gpu_id, first_ts, last_ts) AS ({" UNION ALL ".join(rows)})
            SELECT c.n,
                (SELECT MAX(s.ts) FROM gpu_samples s WHERE s.gpu_id = c.gpu_id AND s.status = 'ok'
                    AND s.ts > c.first_ts AND s.ts < c.last_ts),
                (SELECT MAX(e.ts) FROM events e WHERE e.gpu_id = c.gpu_id AND e.kind = 'gpu_recovered'
                    AND e.ts > c.first_ts AND e.ts < c.last_ts),
                (SELECT MAX(s.ts) FROM gpu_samples s WHERE s.gpu_id = c.gpu_id AND s.status = 'ok'
                    AND s.ts > c.last_ts AND s.ts <= :now),
                (SELECT MAX(e.ts) FROM events e WHERE e.gpu_id = c.gpu_id AND e.kind = 'gpu_recovered'
                    AND e.ts > c.last_ts AND e.ts <= :now)
            FROM c
        """
        for n, ok_before, rec_before, ok_after, rec_after in ctx.conn.execute(text(sql), params):
            out[n] = (_newest(ok_before, rec_before), _newest(ok_after, rec_after))
    return out


def _newest(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _condition(ctx: Context, rule: Rule, g: _Group, *, since: float, count: int) -> Condition:
    spec = rule.spec
    assert isinstance(spec, EventMatch)
    latest = g.events[-1]
    info = xid_info(g.code) if g.kind == "xid" else None
    labels: dict[str, str] = {}
    if g.kind == "xid" and g.code is not None:
        labels["xid"] = g.code
    elif g.code is not None:
        labels["code"] = g.code
    category = latest.category or (info.category if info else None)
    if category:
        labels["category"] = category
    action = latest.recommended_action or (info.recommended_action if info else None)
    context = {
        "kind": g.kind, "code": g.code, "xid": g.code if g.kind == "xid" else None,
        "mnemonic": info.mnemonic if info else None, "resolution": info.resolution if info else None,
        "category": category, "recommended_action": action, "message": latest.message, "count": count,
        "window": duration(spec.window), "threshold": spec.count,
    }
    return ctx.condition(rule, gpu_id=g.gpu_id, node_id=g.node_id, gpu_index=g.gpu_index, since=since,
                         value=float(count), labels=labels, context=context)

