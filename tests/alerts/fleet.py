"""A 1,024-GPU fleet for the evaluation-time measurement: 128 nodes x 8 GPUs sampled every 10 s.

Nodes and GPUs go in through the real write path (``Writer``); the bulk of the samples and
heartbeats with ``executemany`` on the same columns (the write path's speed is measured elsewhere,
``bench/ingest.py``; here only the data matters). A few GPUs carry each default rule's problem so
every evaluator does its full work.
"""

from __future__ import annotations

import random
import time
import uuid

from sqlalchemy import Engine, insert

from collectors.records import Event, GpuInfo
from db.engine import make_engine, upgrade
from db.models import BenchResult, BenchRun, Gpu, Node
from db.writer import Batch, Writer

NODES, PER_NODE, STEP = 128, 8, 10.0
COLUMNS = ("gpu_id", "ts", "node_id", "status", "utilization_gpu_ratio", "temperature_gpu_celsius",
           "temperature_memory_celsius", "power_watts", "power_limit_watts", "clock_event_reasons",
           "ecc_corrected_volatile_total", "pcie_replay_total", "nvlink_errors_total", "remapped_rows_pending",
           "process_count", "memory_used_bytes")


def build(url: str, end: float, hours: float = 3.0) -> Engine:
    """The store at ``url`` with ``hours`` of samples ending at ``end`` (the evaluation's now)."""
    engine = make_engine(url)
    upgrade(engine)
    writer = Writer(engine)
    start = end - hours * 3600
    batches = []
    for n in range(NODES):
        node = f"node-{n:03d}"
        recs = [GpuInfo(index=i, uuid=f"GPU-{node}-{i}", model="NVIDIA H100 80GB HBM3") for i in range(PER_NODE)]
        if n == 5:  # XID 79 on one GPU an hour ago, and an application XID 13 three times on another
            recs.append(Event(end - 3600, "xid", "critical", "XID 79", code="79", fatal=True, gpu_index=0,
                              gpu_uuid=f"GPU-{node}-0"))
            recs += [Event(end - 600 + k, "xid", "warning", "XID 13", code="13", gpu_index=1,
                           gpu_uuid=f"GPU-{node}-1") for k in range(3)]
        batches.append(Batch(uuid.uuid4().hex, {"name": node}, start - STEP, recs))
    writer.write_many(batches)
    with engine.begin() as conn:
        gpus = [(g.id, g.node_id, n, i) for g, n, i in (
            (g, int(g.uuid.split("-")[2]), int(g.uuid.split("-")[3])) for g in conn.execute(
                Gpu.__table__.select()))]
        nodes = {r.name: r.id for r in conn.execute(Node.__table__.select())}
    rng = random.Random(1)
    rows, beats = [], []
    steps = int(hours * 3600 / STEP)
    for k in range(steps + 1):
        ts = start + k * STEP
        for gpu_id, node_id, n, i in gpus:
            lost = n == 5 and i == 0 and ts >= end - 3600
            gone = n == 6 and i == 3 and ts >= end - 1200  # vanished 20 minutes ago
            down = n == 7 and ts >= end - 900  # the whole node stopped 15 minutes ago
            if gone or down:
                continue
            if lost:
                rows.append((gpu_id, ts, node_id, "lost") + (None,) * (len(COLUMNS) - 4))
                continue
            hot = n == 9 and ts >= end - 1800
            util = rng.uniform(0.6, 0.99) if (n + i) % 5 else 0.01
            rows.append((gpu_id, ts, node_id, "ok", util, 90.0 if hot else rng.uniform(40, 80), 70.0,
                         rng.uniform(300, 650), 700.0, 0x20 if hot else 0,
                         k * 2 if n == 11 else 3, 0, 0, False, 1, 2**34))
        for name, node_id in nodes.items():
            if not (name == "node-007" and ts >= end - 900):
                beats.append((node_id, ts))
    mark = "?" if engine.dialect.name == "sqlite" else "%s"
    with engine.begin() as conn:
        cols = ", ".join(COLUMNS)
        conn.exec_driver_sql(f"INSERT INTO gpu_samples ({cols}) VALUES ({', '.join([mark] * len(COLUMNS))})", rows)
        conn.exec_driver_sql(f"INSERT INTO heartbeats (node_id, ts) VALUES ({mark}, {mark})", beats)
        conn.exec_driver_sql(f"UPDATE nodes SET last_seen = {mark}", (end,))
        for day in range(3):
            started = end - 86400 * day - 3000
            for gpu_id, node_id, n, i in gpus:
                run = conn.execute(insert(BenchRun).returning(BenchRun.id), {
                    "uid": uuid.uuid4().hex, "node_id": node_id, "gpu_id": gpu_id, "workload": "gemm",
                    "status": "ok", "started_at": started}).scalar_one()
                slow = 0.8 if (n, i) == (20, 4) else 1.0
                conn.execute(insert(BenchResult), {"run_id": run, "gpu_id": gpu_id, "metric": "tflops",
                                                   "unit": "TFLOP/s", "value": 750 * slow * rng.uniform(0.98, 1.02)})
    return engine


if __name__ == "__main__":  # python -m tests.alerts.fleet [URL]: build, then time default-pack cycles
    import sys
    import tempfile

    from alerts.evaluate import evaluate
    from alerts.health import update_health
    from alerts.lifecycle import apply
    from alerts.rules import load_default_rules

    end = 1_764_000_000.0
    with tempfile.TemporaryDirectory() as tmp:
        url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/fleet.db"
        t0 = time.perf_counter()
        engine = build(url, end)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        rules = load_default_rules()
        for rule in rules:
            t = time.perf_counter()
            found = evaluate(engine, [rule], end)
            print(f"{rule.name:30s} {1000 * (time.perf_counter() - t):7.1f} ms  {len(found)} conditions")
        for _ in range(3):
            t = time.perf_counter()
            conds = evaluate(engine, rules, end)
            mid = time.perf_counter()
            apply(engine, conds, end, rules)
            done = time.perf_counter()
            update_health(engine, end)
            print(f"whole pack: evaluate {1000 * (mid - t):.0f} ms, apply {1000 * (done - mid):.0f} ms, "
                  f"health {1000 * (time.perf_counter() - done):.0f} ms, {len(conds)} conditions")
