"""A mass failure is when alerting matters most: XID 79 on hundreds of GPUs at once must evaluate."""

from __future__ import annotations

import time
import uuid

from alerts.evaluate import evaluate
from alerts.rules import load_default_rules
from collectors.records import Event, GpuInfo, Sample
from db.engine import make_engine, upgrade
from db.writer import Batch, Writer

NODES = 75


def test_fallen_off_the_bus_on_600_gpus(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    now = time.time()
    writer = Writer(engine)
    batches = []
    for node in range(NODES):
        records: list = []
        for gpu in range(8):
            uid = f"GPU-{node}-{gpu}"
            records += [GpuInfo(index=gpu, uuid=uid, model="NVIDIA H100 80GB HBM3"),
                        Sample("gpu", now - 120, {"gpu_index": gpu, "gpu_uuid": uid}, {"status": "ok"}),
                        Event(now - 60, "xid", "critical", "XID 79", code="79", fatal=True, gpu_index=gpu,
                              gpu_uuid=uid, category="gpu-hardware")]
        batches.append(Batch(uuid.uuid4().hex, {"name": f"n{node:03d}"}, now - 60, records))
    writer.write_many(batches)
    conditions = evaluate(engine, load_default_rules(), now)
    fatal = [c for c in conditions if c.rule.name == "gpu_xid_fatal"]
    assert len(fatal) == 600
    engine.dispose()
