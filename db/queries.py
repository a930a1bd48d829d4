"""Read models shared by the CLI, the dashboard and the planner."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, func, select

from db.models import Event, Gpu, GpuSample, Node


@dataclass(slots=True)
class NodeSummary:
    node: str
    last_seen: float
    gpus: int
    gpus_ok: int
    utilization_ratio: float | None
    temperature_max_celsius: float | None
    power_watts: float | None
    throttled: int
    events: int
    critical_events: int


THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80  # power cap, hw slowdown, thermal, power brake


def fleet_summary(engine: Engine) -> list[NodeSummary]:
    """Each node's latest GPU samples, with its event counts: the live table of ``gpufleet demo``."""
    latest = (select(GpuSample.gpu_id, func.max(GpuSample.ts).label("ts"))
              .group_by(GpuSample.gpu_id).subquery())
    rows_q = (select(Node.name, Node.last_seen, GpuSample.status, GpuSample.utilization_gpu_ratio,
                     GpuSample.temperature_gpu_celsius, GpuSample.power_watts, GpuSample.clock_event_reasons)
              .join(Gpu, Gpu.node_id == Node.id)
              .join(latest, latest.c.gpu_id == Gpu.id)
              .join(GpuSample, and_(GpuSample.gpu_id == latest.c.gpu_id, GpuSample.ts == latest.c.ts)))
    events_q = (select(Node.name, func.count(Event.id),
                       func.sum(case((Event.severity == "critical", 1), else_=0)))
                .join(Event, Event.node_id == Node.id).group_by(Node.name))
    out: dict[str, NodeSummary] = {}
    with engine.connect() as conn:
        for name, last_seen in conn.execute(select(Node.name, Node.last_seen)):
            out[name] = NodeSummary(name, last_seen, 0, 0, None, None, None, 0, 0, 0)
        utils: dict[str, list[float]] = {}
        for name, _seen, status, util, temp, power, reasons in conn.execute(rows_q):
            s = out[name]
            s.gpus += 1
            if status != "ok":
                continue
            s.gpus_ok += 1
            if util is not None:
                utils.setdefault(name, []).append(util)
            if temp is not None:
                s.temperature_max_celsius = max(temp, s.temperature_max_celsius or temp)
            if power is not None:
                s.power_watts = (s.power_watts or 0.0) + power
            if reasons and reasons & THROTTLE_MASK:
                s.throttled += 1
        for name, values in utils.items():
            out[name].utilization_ratio = sum(values) / len(values)
        for name, count, critical in conn.execute(events_q):
            out[name].events = count
            out[name].critical_events = int(critical or 0)
    return sorted(out.values(), key=lambda s: s.node)

