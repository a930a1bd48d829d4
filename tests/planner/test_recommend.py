"""Operational recommendations (``planner.recommend``) on stores built for each rule, with the evidence
computed by hand, and ``gpufleet plan recommend``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from collectors.records import Event, GpuInfo, Sample
from db.audit import read
from db.benchstore import save_run
from db.engine import make_engine, upgrade
from db.hostlist import expand_hostlist
from db.models import Gpu, HealthState, Node
from db.writer import Batch, Writer
from gpufleet.cli import main
from planner.jobs import store_jobs
from planner.recommend import (
    acknowledge,
    rec_id,
    recommend,
    vc_capacities,
)

H = 3600.0
T_END = 1_764_000_000.0 - (1_764_000_000.0 % 3600)  # an hour boundary
STEP = 60.0
H100 = "NVIDIA H100 80GB HBM3"
Values = Callable[[str, int, float], "dict[str, Any] | None"]
RESET_48 = "Double-bit ECC error: drain the GPU, reset it so the page is retired or the row remapped."
POWER_CYCLE = "Drain the node and power-cycle it; if the GPU falls off again, reseat or replace it."


def busy(util: float = 0.9) -> dict[str, Any]:
    return {"status": "ok", "utilization_gpu_ratio": util, "process_count": 1}


def idle(held: bool = False) -> dict[str, Any]:
    return {"status": "ok", "utilization_gpu_ratio": 0.01 if held else 0.0, "process_count": 1 if held else 0}


def fleet(url: str, nodes: dict[str, tuple[str, int]], values: Values, *, hours: float = 4,
          events: Sequence[tuple[str, Event]] = (), clusters: dict[str, str] | None = None) -> Engine:
    """A store with ``nodes`` (name → (model, GPUs)) sampled every minute for ``hours`` up to ``T_END``
    through the real write path; ``values(node, gpu, ts)`` gives each sample (None: no sample)."""
    engine = make_engine(url)
    upgrade(engine)
    writer = Writer(engine)
    batches = []
    for k in range(int(hours * H / STEP)):
        ts = T_END - hours * H + k * STEP
        for node, (model, gpus) in nodes.items():
            recs: list[Any] = []
            for i in range(gpus):
                key: dict[str, Any] = {"gpu_index": i, "gpu_uuid": f"GPU-{node}-{i}"}
                if k == 0:
                    recs.append(GpuInfo(index=i, uuid=f"GPU-{node}-{i}", model=model))
                v = values(node, i, ts)
                if v is not None:
                    recs.append(Sample("gpu", ts, key, v))
            recs += [e for n, e in events if n == node and e.ts == ts]
            batches.append(Batch(uuid.uuid4().hex, {"name": node, "cluster": (clusters or {}).get(node, "c")},
                                 ts, recs))
    writer.write_many(batches)
    return engine


def ids(engine: Engine) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    with engine.connect() as conn:
        nodes = dict(conn.execute(select(Node.name, Node.id)).all())
        gpus = {(n, i): g for n, i, g in conn.execute(select(Node.name, Gpu.index, Gpu.id).join(Node))}
    return nodes, gpus


def set_health(engine: Engine, rows: Sequence[tuple[str, int | None, str, list[str], str | None, float]]) -> None:
    """Health as the controller would store it: (node, GPU index or None for the node, state, reasons,
    action, since)."""
    nodes, gpus = ids(engine)
    with engine.begin() as conn:
        conn.execute(insert(HealthState), [
            {"entity": "node" if gpu is None else "gpu", "entity_id": nodes[node] if gpu is None else gpus[node, gpu],
             "node_id": nodes[node], "state": state, "reasons": reasons, "recommended_action": action,
             "since": since, "updated_at": T_END} for node, gpu, state, reasons, action, since in rows])


def by_kind(recs: Sequence[Any], kind: str) -> dict[str, Any]:
    return {r.target: r for r in recs if r.kind == kind}


# -- drain and reset ------------------------------------------------------------------------------


def test_drain_and_reset_from_health(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"n1": (H100, 4), "n2": (H100, 2), "n3": (H100, 1)}, lambda n, i, ts: busy())
    set_health(engine, [
        ("n1", 0, "unhealthy", ["XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "GPU lost"], POWER_CYCLE,
         T_END - 2 * H),
        ("n1", 1, "unhealthy", ["XID 48 DBE"], RESET_48, T_END - 3 * H),
        ("n1", 2, "degraded", ["thermal throttling"], "Check the node's cooling and power delivery.", T_END - H),
        ("n1", 3, "degraded", ["row remap pending"], "Drain the GPU and reset it to apply the remap.", T_END - H),
        ("n1", None, "unhealthy", ["GPU 0: XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"], POWER_CYCLE,
         T_END - 2 * H),
        ("n2", None, "unhealthy", ["agent heartbeat missing"], "Check that the node is up.", T_END - 0.5 * H),
        ("n3", 0, "healthy", [], None, T_END - 9 * H),
    ])
    recs = recommend(engine, now=T_END, window=4 * H, kinds=["drain", "reset"])
    drains, resets = by_kind(recs, "drain"), by_kind(recs, "reset")
    assert set(drains) == {"n1", "n2"} and set(resets) == {"n1 GPU 1", "n1 GPU 3"}
    n1 = drains["n1"]  # XID 79's action power-cycles the node: the node is drained, not just the GPU
    assert (n1.severity, n1.gain, n1.gain_unit, n1.action) == ("critical", 1.0, "GPUs", POWER_CYCLE)
    assert n1.evidence["hours_in_state"] == pytest.approx(2.0) and n1.evidence["gpus_affected"] == 1
    assert n1.evidence["reasons"][0] == "GPU 0: XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert drains["n2"].evidence["reasons"] == ["agent heartbeat missing"]
    assert drains["n2"].evidence["hours_in_state"] == pytest.approx(0.5)
    assert resets["n1 GPU 1"].severity == "critical" and resets["n1 GPU 1"].gpu == 1
    assert resets["n1 GPU 3"].severity == "warning"  # degraded, but its action is a reset
    assert [r.severity for r in recs] == sorted((r.severity for r in recs), key=("critical", "warning").index)


def test_repeated_application_xids_are_drained(sqlite_url: str) -> None:
    def xid(ts: float, gpu: int, code: int) -> tuple[str, Event]:
        return "n1", Event(ts, "xid", "warning", f"XID {code}", code=str(code), category="user/app", fatal=False,
                           recommended_action="Restart the application; if the XID repeats on the same GPU, drain "
                           "it and run diagnostics.", gpu_index=gpu, gpu_uuid=f"GPU-n1-{gpu}",
                           uid=uuid.uuid4().hex)

    events = [xid(T_END - 3 * H, 1, 13), xid(T_END - 2 * H, 1, 13), xid(T_END - H, 1, 13),
              xid(T_END - 2 * H, 2, 13), xid(T_END - H, 2, 31)]
    engine = fleet(sqlite_url, {"n1": (H100, 4)}, lambda n, i, ts: busy(), events=events)
    recs = recommend(engine, now=T_END, window=4 * H, kinds=["drain"])
    assert [r.target for r in recs] == ["n1 GPU 1"]  # GPU 2 had two different XIDs, each once
    ev = recs[0].evidence
    assert (ev["xid"], ev["count"], ev["first"], ev["last"]) == ("13", 3, T_END - 3 * H, T_END - H)
    assert recs[0].page == "failures" and "drain" in recs[0].action
    assert recommend(engine, now=T_END, window=1.5 * H, kinds=["drain"]) == []  # only one in the last 1.5 h


# -- idle-held GPUs -------------------------------------------------------------------------------


def test_idle_held_gpus_with_their_gpu_hours(sqlite_url: str) -> None:
    def values(node: str, i: int, ts: float) -> dict[str, Any]:
        if i == 0:  # busy for the first hour, then held idle for 3 h (and still)
            return busy() if ts < T_END - 3 * H else idle(held=True)
        if i == 1:  # held idle for 30 minutes only
            return idle(held=True) if ts >= T_END - 0.5 * H else busy()
        if i == 2:  # held idle 2 h, then released an hour ago
            return idle(held=True) if T_END - 3 * H <= ts < T_END - H else idle()
        return idle()

    engine = fleet(sqlite_url, {"n1": (H100, 4)}, values)
    recs = by_kind(recommend(engine, now=T_END, window=4 * H, kinds=["idle"]), "idle")
    assert set(recs) == {"n1 GPU 0", "n1 GPU 2"}
    g0, g2 = recs["n1 GPU 0"], recs["n1 GPU 2"]
    assert g0.gain == pytest.approx(3.0) and g0.gain_unit == "GPU-hours"
    assert g0.evidence["allocated_hours"] == pytest.approx(4.0) and g0.evidence["idle_share"] == pytest.approx(0.75)
    assert g0.evidence["held_idle_now"] is True and g0.severity == "warning"
    assert g2.gain == pytest.approx(2.0) and g2.evidence["idle_share"] == pytest.approx(1.0)
    assert g2.evidence["held_idle_now"] is False and g2.severity == "info"
    assert (g0.node, g0.gpu, g0.page) == ("n1", 0, "node")


# -- jobs -----------------------------------------------------------------------------------------


def job(external_id: str, gpus: float, start: float | None, end: float | None, **kw: Any) -> dict[str, Any]:
    row = {c: None for c in ("user", "account", "partition", "category", "gpu_model", "nodes", "node_list",
                              "exit_code", "details")}
    return {**row, "source": "csv", "cluster": kw.pop("cluster", ""), "external_id": external_id,
            "state": "COMPLETED", "submit_ts": kw.pop("submit", start), "start_ts": start, "end_ts": end,
            "gpus": gpus, **kw}


def test_hostlist() -> None:
    assert expand_hostlist("gpu-a[01-03,07],cpu1") == ["gpu-a01", "gpu-a02", "gpu-a03", "gpu-a07", "cpu1"]
    assert expand_hostlist("None assigned") == [] and expand_hostlist(None) == []


def test_rightsize_jobs_using_under_30_percent(sqlite_url: str) -> None:
    def values(node: str, i: int, ts: float) -> dict[str, Any]:
        if node == "n1":  # job a: two of its eight GPUs at 50%, the rest held idle
            return busy(0.5) if i < 2 else idle(held=True)
        return busy(0.8)  # job b keeps its GPUs busy

    engine = fleet(sqlite_url, {"n1": (H100, 8), "n2": (H100, 8)}, values)
    store_jobs(engine, [job("a", 8, T_END - 3 * H, T_END - H, node_list="n1", user="ana"),
                        job("b", 8, T_END - 3 * H, T_END - H, node_list="n2"),
                        job("c", 8, T_END - 3 * H, T_END - H, node_list="elsewhere01")])
    recs = recommend(engine, now=T_END, window=4 * H, kinds=["rightsize"])
    assert [r.target for r in recs] == ["job a"]
    ev = recs[0].evidence
    # used = 2 GPUs at 50% + 6 at 1% = 1.06 GPUs (of 8: 13%); 1.06 / 0.7 -> 2 GPUs; 6 GPUs x 2 h saved
    assert ev["used_gpus"] == pytest.approx(1.06) and ev["usage_ratio"] == pytest.approx(1.06 / 8)
    assert ev["hours"] == pytest.approx(2.0) and ev["suggested_gpus"] == 2 and ev["user"] == "ana"
    assert recs[0].gain == pytest.approx(12.0) and recs[0].node == "n1"


def test_quota_moves_from_idle_to_starved_partition(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"p1": (H100, 8), "p2": (H100, 8), "r1": (H100, 8), "r2": (H100, 8),
                                "r3": (H100, 8), "r4": (H100, 8)}, lambda n, i, ts: busy(), hours=0.1,
                   clusters={"p1": "prod", "p2": "prod", "r1": "research", "r2": "research", "r3": "research",
                             "r4": "research"})
    assert vc_capacities(engine) == {"prod": 16.0, "research": 32.0}
    t0 = T_END - 4 * H
    store_jobs(engine, [job("p-run", 16, t0, T_END, partition="prod"),
                        job("p-wait", 8, None, None, submit=t0, partition="prod"),  # pending all 4 hours
                        job("r-run", 2, t0, t0 + H, partition="research")])
    recs = recommend(engine, now=T_END, window=4 * H, kinds=["quota"])
    assert [r.target for r in recs] == ["research -> prod"]
    r = recs[0]
    assert r.gain == 8 and r.gain_unit == "GPUs" and r.page == "capacity"
    ev = r.evidence
    assert ev["to_pending_share"] == 1.0 and ev["to_mean_pending"] == pytest.approx(8.0)
    assert ev["to_pending_gpu_hours"] == pytest.approx(32.0)
    assert ev["from_mean_allocation"] == pytest.approx(2 / 32 / 4) and ev["from_capacity"] == 32
    # Capacities given explicitly win; a partition without one is not judged: prod has no donor left.
    alone = recommend(engine, now=T_END, window=4 * H, kinds=["quota"], capacities={"prod": 16})
    assert [(r.target, r.severity, r.gain) for r in alone] == [("prod", "info", 8.0)]
    assert alone[0].evidence["pending_share"] == 1.0


def test_sharing_when_most_requests_are_for_part_of_a_gpu(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"n1": (H100, 8)}, lambda n, i, ts: busy(), hours=0.1)
    t0 = T_END - 2 * H
    store_jobs(engine, [job(f"share-{k}", 0.5, t0, T_END, cluster="openb") for k in range(8)]
               + [job(f"whole-{k}", 1, t0, T_END, cluster="openb") for k in range(2)]
               + [job(f"other-{k}", 0.5, t0, T_END, cluster="small") for k in range(3)])
    recs = recommend(engine, now=T_END, window=2 * H, kinds=["sharing"])
    assert [r.target for r in recs] == ["openb"]  # "small" has too few requests to say
    ev = recs[0].evidence
    assert (ev["gpu_requests"], ev["partial_requests"]) == (10, 8) and ev["partial_share"] == pytest.approx(0.8)
    assert ev["mean_concurrent_partial"] == pytest.approx(8.0) and ev["mean_partial_gpus"] == pytest.approx(4.0)
    assert ev["pool_gpus"] == 4 and recs[0].gain == pytest.approx(4.0) and recs[0].gain_unit == "GPUs"


# -- stragglers -----------------------------------------------------------------------------------


def add_bench(engine: Engine, speeds: dict[tuple[str, int], float], rounds: Sequence[float],
              workload: str = "gemm") -> None:
    nodes, gpus = ids(engine)
    env = {"device_model": H100, "dtype": "bf16", "torch": "2.13.0", "driver": "580.65.06"}
    with engine.begin() as conn:
        for started in rounds:
            for (node, i), speed in speeds.items():
                save_run(conn, node_id=nodes[node], gpu_id=gpus[node, i], workload=workload, started_at=started,
                         finished_at=started + 60, config={"dtype": "bf16", "m": 8192}, environment=env,
                         results=[{"metric": "tflops", "unit": "TFLOP/s", "value": 700.0 * speed}])


def test_straggler_still_failing_is_recommended(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"n1": (H100, 2), "n2": (H100, 2)}, lambda n, i, ts: busy(), hours=0.1)
    add_bench(engine, {("n1", 0): 1.0, ("n1", 1): 1.0, ("n2", 0): 1.0, ("n2", 1): 0.8},
              [T_END - 2 * 86400, T_END - 86400])
    recs = recommend(engine, now=T_END, kinds=["straggler"])
    assert [r.target for r in recs] == ["n2 GPU 1"]
    ev = recs[0].evidence
    assert ev["speed"] == pytest.approx(0.8) and ev["fleet_median"] == pytest.approx(700.0) and ev["peers"] == 4
    assert ev["failing_runs_in_a_row"] == 2 and ev["bench_slow_event"]
    assert recs[0].gain == pytest.approx(0.2) and recs[0].page == "benchmarks"
    add_bench(engine, {("n1", 0): 1.0, ("n1", 1): 1.0, ("n2", 0): 1.0, ("n2", 1): 1.0}, [T_END - 3600])
    assert recommend(engine, now=T_END, kinds=["straggler"]) == []  # it passed its last run


# -- ids, acknowledgements and the CLI --------------------------------------------------------------


@pytest.fixture
def idle_store(sqlite_url: str) -> Engine:
    return fleet(sqlite_url, {"n1": (H100, 2)}, lambda n, i, ts: idle(held=i == 0), hours=2)


def test_ids_are_stable_and_acknowledgements_stick(idle_store: Engine) -> None:
    first = recommend(idle_store, now=T_END, window=2 * H)
    assert [r.id for r in first] == [rec_id("idle", "n1 GPU 0")]
    later = recommend(idle_store, now=T_END - 600, window=H)
    assert [r.id for r in later] == [first[0].id] and later[0].gain != first[0].gain
    acknowledge(idle_store, first[0], "ops@example.com", "ticket 12", now=T_END)
    acknowledge(idle_store, first[0], "lead@example.com", None, now=T_END + 5)
    again = recommend(idle_store, now=T_END, window=2 * H)[0]
    assert (again.acknowledged_by, again.acknowledged_at, again.note) == ("lead@example.com", T_END + 5, None)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_json_and_acknowledges_with_an_audit_entry(idle_store: Engine, sqlite_url: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "recommend", "--db", sqlite_url, "--at", str(T_END), "--window-days", str(2 / 24),
                       "--json")
    assert code == 0
    doc = json.loads(out)
    assert [(d["kind"], d["target"], d["id"]) for d in doc] == [("idle", "n1 GPU 0", rec_id("idle", "n1 GPU 0"))]
    assert doc[0]["evidence"]["idle_held_hours"] == pytest.approx(2.0)
    code, out, _ = cli(capsys, "recommend", "--db", sqlite_url, "--at", str(T_END), "--window-days", str(2 / 24),
                       "--ack", doc[0]["id"], "--note", "on it")
    assert code == 0 and "acknowledged" in out
    entry = read(idle_store, actions=["recommendation.ack"])[0]
    assert (entry.source, entry.outcome, entry.target) == ("cli", "ok", "idle n1 GPU 0")
    assert entry.details["id"] == doc[0]["id"] and entry.details["note"] == "on it"
    code, out, _ = cli(capsys, "recommend", "--db", sqlite_url, "--at", str(T_END), "--window-days", str(2 / 24))
    assert "acknowledged by" in out and "[warning] idle" in out
    code, out, _ = cli(capsys, "recommend", "--db", sqlite_url, "--at", str(T_END), "--window-days", str(2 / 24),
                       "--hide-acknowledged")
    assert "nothing to recommend" in out


@pytest.mark.parametrize("argv", [
    ["recommend", "--kind", "bogus"],
    ["recommend", "--vc-capacity", "prod"],
    ["recommend", "--window-days", "0"],
    ["recommend", "--at", "yesterday-ish"],
    ["recommend", "--note", "without ack"],
    ["recommend", "--ack", "0000000000000000"],
])
def test_cli_errors_are_one_line(idle_store: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str],
                                 argv: list[str]) -> None:
    code, out, err = cli(capsys, *argv, "--db", sqlite_url)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("gpufleet")]
    assert len(lines) == 1 and lines[0].startswith("gpufleet: error: ")
    assert "Traceback" not in err
