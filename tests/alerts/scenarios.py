"""A small fleet written through the real write path, one batch per node and step, so each alert
test builds exactly the series it is about; and one fleet with an incident of each kind the default
rule pack knows. The fixtures here are imported by the test modules that use them (this folder has
no conftest, so other test modules in it are unaffected)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.engine import make_url

from alerts.evaluate import Condition, evaluate
from alerts.lifecycle import Changes, apply
from alerts.rules import Rule, parse_rules
from collectors.records import Event, GpuInfo, Sample
from collectors.xid import classify
from db.engine import make_engine, upgrade
from db.models import Alert, HealthState
from db.writer import Batch, Writer

T0 = 1_764_000_000.0
STEP = 60.0
MODEL = "NVIDIA H100 80GB HBM3"


def healthy(**overrides: Any) -> dict[str, Any]:
    """A busy, healthy GPU's sample values."""
    values: dict[str, Any] = {
        "status": "ok", "utilization_gpu_ratio": 0.9, "temperature_gpu_celsius": 60.0,
        "temperature_memory_celsius": 65.0, "power_watts": 450.0, "power_limit_watts": 700.0,
        "clock_event_reasons": 0, "ecc_corrected_volatile_total": 0, "ecc_uncorrected_volatile_total": 0,
        "pcie_replay_total": 0, "nvlink_errors_total": 0, "remapped_rows_pending": False,
        "remapped_rows_failure": False, "process_count": 1,
    }
    values.update(overrides)
    return values


def xid(ts: float, gpu: int, code: int, node: str = "n1") -> Event:
    info = classify(code)
    return Event(ts, "xid", info.severity, f"XID {code} ({info.mnemonic}) on GPU {gpu}", code=str(code),
                 category=info.category, fatal=info.fatal, recommended_action=info.recommended_action,
                 gpu_index=gpu, gpu_uuid=uuid(node, gpu), source="kmsg", uid=_uid("xid", node, gpu, ts, code))


def event(ts: float, kind: str, gpu: int, node: str = "n1", **kw: Any) -> Event:
    kw.setdefault("severity", "warning")
    kw.setdefault("message", f"GPU {gpu}: {kind}")
    return Event(ts, kind, kw.pop("severity"), kw.pop("message"), gpu_index=gpu, gpu_uuid=uuid(node, gpu),
                 source="nvml", uid=_uid(kind, node, gpu, ts), **kw)


def uuid(node: str, gpu: int) -> str:
    return f"GPU-{node}-{gpu}"


def _uid(*parts: Any) -> str:
    return hashlib.md5(repr(parts).encode()).hexdigest()


Values = Callable[[str, int, float], "dict[str, Any] | None"]


class Fleet:
    """Nodes of ``gpus`` GPUs; ``write`` adds samples from ``values(node, gpu, ts)`` (None: the GPU
    sends nothing) every ``step`` over a time range, with events and a heartbeat per batch."""

    def __init__(self, url: str, nodes: tuple[str, ...] = ("n1",), gpus: int = 4) -> None:
        self.engine: Engine = make_engine(url)
        upgrade(self.engine)
        self.writer = Writer(self.engine)
        self.nodes, self.gpus = nodes, gpus
        self._seen: set[str] = set()

    def write(self, start: float, end: float, values: Values = lambda n, g, t: healthy(), *,
              events: dict[float, list[Event]] | None = None, step: float = STEP,
              down: Callable[[str, float], bool] = lambda n, t: False) -> None:
        """Samples at start, start + step, … up to and including ``end``."""
        batches = []
        k = 0
        while start + k * step <= end + 1e-9:
            ts = start + k * step
            k += 1
            for node in self.nodes:
                if down(node, ts):
                    continue
                recs: list[Any] = []
                if node not in self._seen:
                    recs += [GpuInfo(index=i, uuid=uuid(node, i), model=MODEL) for i in range(self.gpus)]
                    self._seen.add(node)
                for i in range(self.gpus):
                    v = values(node, i, ts)
                    if v is not None:
                        recs.append(Sample("gpu", ts, {"gpu_index": i, "gpu_uuid": uuid(node, i)}, v))
                recs += [e for e in (events or {}).get(ts, []) if e.gpu_uuid is None or e.gpu_uuid.startswith(
                    f"GPU-{node}-")]
                batches.append(Batch(_uid("batch", node, ts), {"name": node, "cluster": "c"}, ts, recs))
        self.writer.write_many(batches)

    def cycle(self, rules: list[Rule], now: float) -> tuple[list[Condition], Changes]:
        """One controller cycle: evaluate, then apply."""
        conditions = evaluate(self.engine, rules, now)
        return conditions, apply(self.engine, conditions, now, rules)

    def alerts(self, rule: str | None = None) -> list[Any]:
        with self.engine.connect() as conn:
            q = select(Alert).order_by(Alert.rule, Alert.fingerprint)
            return list(conn.execute(q.where(Alert.rule == rule) if rule else q))


def rules(text: str) -> list[Rule]:
    return parse_rules(text, "test.yaml")


def incidents_store(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """For a module-scoped fixture: the incident fleet (``build_incidents``) on ``backend``
    (sqlite | postgresql: a fresh database, dropped afterwards)."""
    if backend == "sqlite":
        fleet = build_incidents(f"sqlite:///{tmp_path_factory.mktemp('incidents') / 'store.db'}")
        yield fleet
        fleet.engine.dispose()
        return
    from tests.conftest import PG_ADMIN_URL, _pg_admin_engine

    admin = _pg_admin_engine()
    name = f"gpufleet_test_{_uid('incidents', time.time())[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        fleet = build_incidents(make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
        yield fleet
        fleet.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset(fleet: Fleet) -> Fleet:
    """Empty the alert and health tables, so a test on a shared store starts from no alerts."""
    with fleet.engine.begin() as conn:
        conn.execute(delete(Alert))
        conn.execute(delete(HealthState))
    return fleet


def opened(url: str, **kw: Any) -> Iterator[Fleet]:
    """For a fixture: a ``Fleet`` at ``url``, disposed afterwards."""
    f = Fleet(url, **kw)
    yield f
    f.engine.dispose()


# -- one fleet with one incident of each kind the default pack knows ------------------------------

NOW = T0 + 7200
START = T0  # two hours of samples every minute, up to NOW
XID79_AT = NOW - 1800
XID13_ONCE = NOW - 1200
XID13_REPEATS = (NOW - 900, NOW - 600, NOW - 300)
HOT_FROM = NOW - 420
N2_DOWN_FROM = NOW - 600
N3_GPU1_GONE_FROM = NOW - 900
REPLAY_AT = NOW - 120
CAPPED_FROM = NOW - 1200
IDLE_FROM = NOW - 2400
SLOW = ("n3", 0)
INCIDENTS = {  # (rule, node, gpu) that fire at NOW
    ("gpu_xid_fatal", "n1", "0"), ("gpu_lost", "n1", "0"), ("gpu_missing", "n1", "0"),
    ("gpu_xid_repeated", "n1", "2"),
    ("gpu_temperature_high", "n1", "3"), ("gpu_thermal_slowdown", "n1", "3"),
    ("node_down", "n2", None),
    ("gpu_missing", "n3", "1"), ("gpu_ecc_corrected_rising", "n3", "2"), ("gpu_pcie_replays", "n3", "3"),
    ("bench_slow", "n3", "0"),
    ("gpu_power_capped", "n4", "0"), ("gpu_idle_allocated", "n4", "1"),
}


def incident_values(node: str, gpu: int, ts: float) -> dict[str, Any] | None:
    if (node, gpu) == ("n1", 0) and ts > XID79_AT:
        return {"status": "lost", "error": "GPU is lost"}
    if (node, gpu) == ("n1", 3) and ts >= HOT_FROM:
        return healthy(temperature_gpu_celsius=91.0, clock_event_reasons=0x20 | 0x40)
    if (node, gpu) == ("n3", 1) and ts >= N3_GPU1_GONE_FROM:
        return None
    if (node, gpu) == ("n3", 2):  # 5 corrected ECC errors a minute: 300 an hour
        return healthy(ecc_corrected_volatile_total=int((ts - START) / 60) * 5)
    if (node, gpu) == ("n3", 3):
        return healthy(pcie_replay_total=4 if ts >= REPLAY_AT else 0)
    if (node, gpu) == ("n4", 0) and ts >= CAPPED_FROM:
        return healthy(power_watts=695.0, power_limit_watts=700.0)
    if (node, gpu) == ("n4", 1) and ts >= IDLE_FROM:
        return healthy(utilization_gpu_ratio=0.01, process_count=1)
    return healthy()


def build_incidents(url: str) -> Fleet:
    f = Fleet(url, nodes=("n1", "n2", "n3", "n4"), gpus=4)
    events = {
        XID79_AT: [xid(XID79_AT, 0, 79), event(XID79_AT, "gpu_lost", 0, severity="critical", fatal=True,
                                               category="gpu-hardware", message="GPU 0 lost: GPU is lost",
                                               recommended_action=classify(79).recommended_action)],
        XID13_ONCE: [xid(XID13_ONCE, 1, 13)],
        HOT_FROM: [event(HOT_FROM, "thermal", 3, category="gpu-hardware", message="GPU 3: thermal slowdown")],
    }
    for ts in XID13_REPEATS:
        events.setdefault(ts, []).append(xid(ts, 2, 13))
    f.write(START, NOW, incident_values, events=events,
            down=lambda node, ts: node == "n2" and ts >= N2_DOWN_FROM)
    _bench(f)
    return f


def _bench(f: Fleet) -> None:
    from sqlalchemy import insert

    from db.models import BenchResult, BenchRun, Gpu, Node

    with f.engine.begin() as conn:
        gpus = conn.execute(select(Gpu.id, Gpu.node_id, Node.name, Gpu.index).join(Node, Node.id == Gpu.node_id)).all()
        for day, started in enumerate((NOW - 86400 - 3600, NOW - 3600)):
            for gpu_id, node_id, node, index in gpus:
                slow = 0.8 if (node, index) == SLOW and day == 1 else 1.0
                run = conn.execute(insert(BenchRun).returning(BenchRun.id), {
                    "uid": _uid("run", gpu_id, started), "node_id": node_id, "gpu_id": gpu_id, "workload": "gemm",
                    "status": "ok", "started_at": started, "finished_at": started + 60}).scalar_one()
                conn.execute(insert(BenchResult), {"run_id": run, "gpu_id": gpu_id, "metric": "tflops",
                                                   "unit": "TFLOP/s", "value": 750.0 * slow * (1 + index / 1000)})
