"""A small, realistic store for the dashboard tests, written through the real write path.

Three nodes x four GPUs, four hours at 60 s, ending at ``T_END``:

- node-a (cluster alpha, H100): GPUs 0-1 busy, GPU 2 idle but allocated, GPU 3 idle (allocated until
  30 minutes ago). GPU 1 had an XID 48 three hours ago, was in error for ten minutes, then recovered.
- node-b (cluster alpha, H100): all busy and thermally throttled for the last 90 minutes; GPU 3 is
  the slow one in the benchmarks.
- node-c (cluster beta, A100): GPU 0 fell off the bus (XID 79) an hour ago and has been lost since;
  GPU 1 had an XID 13 two hours ago (an application fault); GPU 2 got uncorrectable ECC errors and a
  pending row remap 30 minutes ago; GPU 3 idle.

The dashboard's clock is pinned to ``NOW`` through ``GPUFLEET_DASHBOARD_NOW`` in the tests.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import Engine, insert, select

from collectors.records import Event, GpuInfo, Sample
from collectors.xid import classify
from db.engine import make_engine, upgrade
from db.models import BenchResult, BenchRun, Gpu, Node
from db.rollups import refresh
from db.writer import Batch, Writer

T_END = 1_764_000_000.0 - (1_764_000_000.0 % 3600)
NOW = T_END + 30
STEP = 60.0
HOURS = 4
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
NODES = {"node-a": ("alpha", H100), "node-b": ("alpha", H100), "node-c": ("beta", A100)}
XID48_AT = T_END - 3 * 3600
RECOVERED_AT = XID48_AT + 600
XID79_AT = T_END - 3600
XID13_AT = T_END - 2 * 3600
ECC_AT = T_END - 1800
THROTTLE_FROM = T_END - 5400
SLOW = ("node-b", 3)


def _uuid(node: str, index: int) -> str:
    return f"GPU-{node}-{index}"


def _gpu_values(node: str, i: int, ts: float) -> dict[str, Any]:
    """One sample's values for GPU ``i`` of ``node`` at ``ts``."""
    busy = (node == "node-a" and i < 2) or node == "node-b" or (node == "node-c" and i in (1, 2))
    allocated = node == "node-a" and (i == 2 or (i == 3 and ts < T_END - 1800))  # GPU 3: job ended 30 min ago
    wobble = ((int(ts / STEP) * 7 + i * 13) % 10) / 100  # deterministic 0.00-0.09
    util = 0.85 + wobble if busy else (0.01 if allocated else 0.0)
    reasons = 0x1 if util == 0.0 else 0
    hot = node == "node-b" and ts >= THROTTLE_FROM
    if hot:
        reasons |= 0x20 | 0x40
    limit = 700.0 if node != "node-c" else 400.0
    ecc = 2 if node == "node-c" and i == 2 and ts >= ECC_AT else 0
    return {
        "status": "ok", "utilization_gpu_ratio": util, "utilization_memory_ratio": util / 2,
        "memory_used_bytes": int((60 if busy or allocated else 1) * 2**30), "memory_total_bytes": 80 * 2**30,
        "memory_free_bytes": int((20 if busy or allocated else 79) * 2**30),
        "temperature_gpu_celsius": 88.0 if hot else (70.0 if busy else 35.0), "temperature_memory_celsius": 60.0,
        "power_watts": limit * (0.9 if busy else 0.15), "power_limit_watts": limit,
        "sm_clock_hz": (1.4e9 if hot else 1.98e9) if busy else 3.45e8, "mem_clock_hz": 2.6e9,
        "sm_clock_max_hz": 1.98e9, "mem_clock_max_hz": 2.6e9, "clock_event_reasons": reasons,
        "performance_state": 0 if busy else 8, "pcie_tx_bytes_per_second": 2e9 if busy else 1e6,
        "pcie_rx_bytes_per_second": 3e9 if busy else 1e6, "pcie_replay_total": 0, "pcie_link_gen": 5,
        "pcie_link_gen_max": 5, "pcie_link_width": 16, "pcie_link_width_max": 16, "nvlink_links_active": 18,
        "nvlink_tx_bytes_total": ts * 1e9, "nvlink_rx_bytes_total": ts * 1e9, "nvlink_errors_total": 0,
        "ecc_corrected_volatile_total": 5, "ecc_uncorrected_volatile_total": ecc,
        "ecc_corrected_aggregate_total": 5, "ecc_uncorrected_aggregate_total": ecc,
        "remapped_rows_pending": bool(ecc), "remapped_rows_failure": False,
        "process_count": 1 if busy or allocated else 0,
    }


def _event(ts: float, kind: str, node: str, i: int, **kw: Any) -> Event:
    return Event(ts, kind, kw.pop("severity"), kw.pop("message"), gpu_index=i, gpu_uuid=_uuid(node, i),
                 source="nvml", uid=hashlib.md5(f"{kind}-{node}-{i}-{ts}".encode()).hexdigest(), **kw)


def _xid(ts: float, node: str, i: int, code: int) -> Event:
    info = classify(code)
    return _event(ts, "xid", node, i, severity=info.severity, message=f"XID {code} ({info.mnemonic}) on GPU {i}",
                  code=str(code), category=info.category, fatal=info.fatal,
                  recommended_action=info.recommended_action, details={"mnemonic": info.mnemonic})


def _records(node: str, ts: float, first: bool) -> list[Any]:
    model = NODES[node][1]
    recs: list[Any] = []
    for i in range(4):
        uid = _uuid(node, i)
        key = {"gpu_index": i, "gpu_uuid": uid}
        if first:
            recs.append(GpuInfo(index=i, uuid=uid, model=model, memory_total_bytes=80 * 2**30,
                                power_limit_default_watts=700.0 if node != "node-c" else 400.0,
                                sm_clock_max_hz=1.98e9, mem_clock_max_hz=2.6e9, pcie_link_gen_max=5,
                                pcie_link_width_max=16))
        if node == "node-c" and i == 0 and ts >= XID79_AT:
            recs.append(Sample("gpu", ts, key, {"status": "lost", "error": "GPU is lost"}))
            continue
        if node == "node-a" and i == 1 and XID48_AT <= ts < RECOVERED_AT:
            recs.append(Sample("gpu", ts, key, {"status": "error", "error": "NVML timeout"}))
            continue
        values = _gpu_values(node, i, ts)
        recs.append(Sample("gpu", ts, key, values))
        if values["process_count"]:
            recs.append(Sample("gpu_process", ts, {**key, "pid": 1000 + i},
                               {"name": "python", "used_memory_bytes": 40 * 2**30}))
    recs.append(Sample("host", ts, {}, {"cpu_utilization_ratio": 0.3, "memory_total_bytes": 2**40}))
    for name, kind, rate in (("eth0", "ethernet", 1e8), ("ib0", "infiniband", 2e10)):
        recs.append(Sample("interface", ts, {"interface": name}, {
            "kind": kind, "rx_bytes_per_second": rate, "tx_bytes_per_second": rate / 2,
            "speed_bits_per_second": 4e11 if kind == "infiniband" else 1e11, "rx_errors_total": 0}))
    recs.append(Sample("disk", ts, {"device": "nvme0n1"}, {
        "utilization_ratio": 0.2, "read_bytes_per_second": 5e8, "write_bytes_per_second": 1e8}))
    recs.append(Sample("filesystem", ts, {"path": "/"}, {
        "size_bytes": 10**12, "used_bytes": 4 * 10**11 + int(ts - T_END) * 1000, "avail_bytes": 5 * 10**11}))
    recs.extend(_events_at(node, ts))
    return recs


def _events_at(node: str, ts: float) -> list[Event]:
    out: list[Event] = []
    if node == "node-a" and ts == XID48_AT:
        out.append(_xid(ts, node, 1, 48))
    if node == "node-a" and ts == RECOVERED_AT:
        out.append(_event(ts, "gpu_recovered", node, 1, severity="info", message="GPU 1 reports again",
                          category="gpu-hardware"))
    if node == "node-b" and ts == THROTTLE_FROM:
        out.extend(_event(ts, "thermal", node, i, severity="warning", category="gpu-hardware",
                          message=f"GPU {i}: thermal slowdown") for i in range(4))
    if node == "node-c" and ts == XID79_AT:
        out.append(_xid(ts, node, 0, 79))
        out.append(_event(ts, "gpu_lost", node, 0, severity="critical", message="GPU 0 lost", fatal=True,
                          category="gpu-hardware", recommended_action=classify(79).recommended_action))
    if node == "node-c" and ts == XID13_AT:
        out.append(_xid(ts, node, 1, 13))
    if node == "node-c" and ts == ECC_AT:
        out.append(_event(ts, "ecc", node, 2, severity="critical", message="GPU 2: 2 uncorrectable ECC error(s)",
                          code="uncorrected", category="gpu-hardware", fatal=True,
                          recommended_action=classify(48).recommended_action))
        out.append(_event(ts, "ecc", node, 2, severity="warning", message="GPU 2: row remapping pending",
                          code="remap_pending", category="gpu-hardware"))
    return out


def _bench(engine: Engine) -> None:
    with engine.begin() as conn:
        nodes = dict(conn.execute(select(Node.name, Node.id)).all())
        gpus = {(n, i): g for n, i, g in conn.execute(
            select(Node.name, Gpu.index, Gpu.id).join(Node, Node.id == Gpu.node_id))}
        for round_no, started in enumerate((T_END - 3 * 3600 + 300, T_END - 3600 + 300)):
            for node, (_cluster, model) in NODES.items():
                for i in range(4):
                    if node == "node-c" and i == 0 and started > XID79_AT:
                        continue
                    slow = 0.8 if (node, i) == SLOW else 1.0
                    base = 750.0 if model == H100 else 280.0
                    jitter = 1 + (i - 1.5) / 100 + round_no / 200
                    env = {"torch": "2.13.0", "driver": "580.65.06", "cuda": "13.0", "gpu_model": model}
                    for workload, metric, unit, value in (("gemm", "tflops", "TFLOP/s", base * slow * jitter),
                                                          ("llm-train", "mfu", "ratio", 0.45 * slow * jitter)):
                        run_id = conn.execute(insert(BenchRun).returning(BenchRun.id), {
                            "uid": uuid.uuid4().hex, "node_id": nodes[node], "gpu_id": gpus[node, i],
                            "workload": workload, "suite": "quick", "device": "cuda", "status": "ok",
                            "started_at": started, "finished_at": started + 60,
                            "config": {"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192}, "environment": env,
                        }).scalar_one()
                        conn.execute(insert(BenchResult), {
                            "run_id": run_id, "gpu_id": gpus[node, i], "metric": metric, "unit": unit,
                            "value": value, "median": value, "p90": value * 1.01, "p99": value * 1.02,
                            "cv": 0.01, "count": 5, "samples": [value] * 5})


def seed(url: str) -> Engine:
    """Create and fill the store at ``url``; returns its engine (rollups refreshed)."""
    engine = make_engine(url)
    upgrade(engine)
    writer = Writer(engine)
    n = int(HOURS * 3600 / STEP)
    batches = []
    for k in range(n + 1):
        ts = T_END - HOURS * 3600 + k * STEP
        for node, (cluster, _model) in NODES.items():
            batches.append(Batch(uuid.uuid4().hex, {"name": node, "cluster": cluster, "agent_version": "test"},
                                 ts, _records(node, ts, first=k == 0)))
    for i in range(0, len(batches), 200):
        writer.write_many(batches[i:i + 200])
    refresh(engine, now=T_END + STEP)
    _bench(engine)
    return engine


def empty(url: str) -> Engine:
    """A migrated store with nothing in it."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


# -- alerting (what ``gpufleet controller run`` would have written) ----------------------------

DAY = 86400.0
SILENCED = {"node": "node-b", "alertname": "gpu_temperature_high"}


def _alert_row(labels: dict[str, str], state: str, since: float, *, ends_at: float | None = None,
               node_id: int | None, gpu_id: int | None, action: str | None = None) -> dict[str, Any]:
    from alerts.lifecycle import fingerprint

    notes = {"summary": f"{labels['alertname']} on {labels.get('node')}"
                        + (f" GPU {labels['gpu']}" if "gpu" in labels else "")}
    if action:
        notes["recommended_action"] = action
    return {"fingerprint": fingerprint(labels), "rule": labels["alertname"], "state": state, "labels": labels,
            "annotations": notes, "value": 1.0, "active_since": since,
            "starts_at": None if state == "pending" else since, "ends_at": ends_at,
            "updated_at": ends_at or NOW - 30, "node_id": node_id, "gpu_id": gpu_id}


def _payload(receiver: str, group: dict[str, str], alerts: list[dict[str, str]], status: str) -> dict[str, Any]:
    return {"receiver": receiver, "status": status, "groupLabels": group, "version": "4",
            "alerts": [{"status": status, "labels": labels, "annotations": {}} for labels in alerts]}


def seed_alerting(engine: Engine) -> None:
    """Alerts in every state, silences, notifications delivered, retrying, pending and failed with their
    attempts, and health as ``alerts.health.update_health`` judges the seeded fleet at ``NOW``.

    Firing: critical ``gpu_lost`` (node-c GPU 0); warning ``gpu_temperature_high`` on node-b GPUs 1-2
    (silenced) and ``node_filesystem_full`` on node-a (a node alert); info ``gpu_power_capped``
    (node-a GPU 0). Pending: ``gpu_temperature_high`` (node-b GPU 3). Resolved: ``gpu_xid`` (node-a
    GPU 1) in the last 6 hours, ``gpu_ecc_errors`` (node-c GPU 2) two days ago."""
    from alerts.health import update_health
    from alerts.silences import create_silence
    from db.models import Alert, DeliveryAttempt, Notification

    with engine.connect() as conn:
        nodes = dict(conn.execute(select(Node.name, Node.id)).all())
        gpus = {(n, i): g for n, i, g in conn.execute(
            select(Node.name, Gpu.index, Gpu.id).join(Node, Node.id == Gpu.node_id))}

    def gpu(alertname: str, severity: str, node: str, i: int) -> tuple[dict[str, str], int, int]:
        labels = {"alertname": alertname, "severity": severity, "node": node, "gpu": str(i),
                  "uuid": _uuid(node, i), "model": NODES[node][1]}
        return labels, nodes[node], gpus[node, i]

    rows = []
    for (labels, node_id, gpu_id), state, since, ends, action in (
            (gpu("gpu_lost", "critical", "node-c", 0), "firing", XID79_AT, None, classify(79).recommended_action),
            (gpu("gpu_temperature_high", "warning", "node-b", 1), "firing", THROTTLE_FROM + 300, None, None),
            (gpu("gpu_temperature_high", "warning", "node-b", 2), "firing", THROTTLE_FROM + 300, None, None),
            (gpu("gpu_power_capped", "info", "node-a", 0), "firing", NOW - 1200, None, None),
            (gpu("gpu_temperature_high", "warning", "node-b", 3), "pending", NOW - 120, None, None),
            (gpu("gpu_xid", "critical", "node-a", 1), "resolved", XID48_AT, RECOVERED_AT + 60, None),
            (gpu("gpu_ecc_errors", "critical", "node-c", 2), "resolved", NOW - 3 * DAY, NOW - 2 * DAY, None)):
        rows.append(_alert_row(labels, state, since, ends_at=ends, node_id=node_id, gpu_id=gpu_id, action=action))
    rows.append(_alert_row({"alertname": "node_filesystem_full", "severity": "warning", "node": "node-a"},
                           "firing", NOW - 600, node_id=nodes["node-a"], gpu_id=None, action="Free space on /."))
    with engine.begin() as conn:
        conn.execute(insert(Alert), rows)

    create_silence(engine, [f"{k}={v}" for k, v in SILENCED.items()], 4 * 3600, "fan swap on node-b",
                   "ops@example.com", now=NOW - 1800)
    create_silence(engine, ["node=node-c"], 1800, "reboot", "ops@example.com", now=NOW - 3 * 3600)  # expired 2.5 h ago
    create_silence(engine, ["node=node-a"], 3600, "old", "ops@example.com", now=NOW - 3 * DAY)  # expired long ago

    lost = rows[0]["labels"]
    hot = rows[1]["labels"]
    capped = rows[3]["labels"]
    notifications = [  # (receiver, group, alerts, status, state, created, attempts: [(ok, http, error)], last error)
        ("oncall", {"alertname": "gpu_lost"}, [lost], "firing", "delivered", XID79_AT + 120, [(True, 200, None)]),
        ("slack", {"alertname": "gpu_lost"}, [lost], "firing", "failed", XID79_AT + 120,
         [(False, 500, "HTTP 500"), (False, 500, "HTTP 500"), (False, 500, "HTTP 500")]),
        ("oncall", {"alertname": "gpu_temperature_high"}, [hot], "firing", "pending", NOW - 900,
         [(False, None, "connection refused")]),
        ("oncall", {"alertname": "gpu_power_capped"}, [capped], "firing", "pending", NOW - 60, []),
        ("oncall", {"alertname": "gpu_ecc_errors"}, [rows[6]["labels"]], "resolved", "delivered", NOW - 2 * DAY,
         [(True, 200, None)]),
    ]
    with engine.begin() as conn:
        for k, (receiver, group, carried, status, state, created, tries) in enumerate(notifications):
            last_error = tries[-1][2] if tries else None
            if state == "failed":
                last_error = f"{last_error} (gave up: attempts)"
            done = created + 60 * len(tries)
            nid = conn.execute(insert(Notification).returning(Notification.id), {
                "dedup_key": f"seed-{k}", "receiver": receiver, "group_key": f"{{}}:{group}", "status": status,
                "payload": _payload(receiver, group, carried, status), "state": state, "created_at": created,
                "next_attempt_at": done + 60 if state == "pending" else done, "attempts": len(tries),
                "delivered_at": done if state == "delivered" else None, "last_error": last_error,
            }).scalar_one()
            for j, (ok, http, error) in enumerate(tries):
                conn.execute(insert(DeliveryAttempt), {
                    "notification_id": nid, "ts": created + 60 * (j + 1), "receiver": receiver, "ok": ok,
                    "http_status": http, "latency_seconds": 0.05, "error": error, "controller": "ctl-1"})
    update_health(engine, now=NOW)
