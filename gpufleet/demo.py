"""``gpufleet demo``: a simulated fleet with a week of history, live agents and the dashboard.

Every number comes from the real pipeline: the fake NVML (driven by fault scenarios placed across
the history), the NVML collector, the store's write path and its rollups. The history is replayed
on a simulated clock; then the same simulated nodes keep reporting live through real agents. The
nightly benchmarks are one real run on this machine scaled per simulated GPU (``demobench``), and
the straggler detector raises its ``bench_slow`` events over them.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.loop import AGENT_VERSION, Agent
from collectors.fake_nvml import FakeNVML
from collectors.gpu_models import get_model
from collectors.host import HostCollector
from collectors.network import NetworkCollector
from collectors.nvml import NvmlCollector
from collectors.scenarios import Fault, Load, Scenario
from collectors.storage import StorageCollector
from db.engine import make_engine, upgrade
from db.queries import fleet_summary
from db.rollups import refresh
from db.writer import Batch, Writer, new_batch_id
from gpufleet.demobench import Measured, measure_once, write_history
from planner import stragglers

log = logging.getLogger(__name__)

DAY = 86400.0
RECENT_STEP = 60.0  # history resolution over the last day
OLD_STEP = 300.0  # and before it
LIVE_FAULT_AFTER = 150.0  # seconds after the demo starts


@dataclass(frozen=True)
class SimNode:
    name: str
    scenario: Scenario
    seed: int


def _daily(start: float, days: int, hour_utc: float) -> list[float]:
    """Scenario times (seconds after ``start``) of ``hour_utc`` on each day of the history."""
    first = math.floor(start / DAY) * DAY + hour_utc * 3600
    return [t - start for t in (first + d * DAY for d in range(days + 1)) if 0 <= t - start]


def fleet(nodes: int, gpus: int, start: float, history_s: float) -> list[SimNode]:
    """The demo fleet: four kinds of node, repeated, each with its faults placed in the history."""
    h = history_s
    days = max(1, math.ceil(h / DAY))

    def g(i: int) -> int:
        return i % gpus

    kinds = [
        # A busy training node with some idle-but-allocated jobs, app XIDs and a correctable-ECC trickle.
        [Fault("xid", at=0.30 * h, gpu=g(1), code=13), Fault("xid", at=0.75 * h, gpu=g(4), code=31),
         Fault("ecc_corrected", at=0.0, gpu=g(2), params={"per_hour": 3})],
        # The hot node: two GPUs throttle thermally every afternoon; one was power capped for a while.
        [*(Fault("thermal", at=t, gpu=g(k), duration=2 * 3600, params={"peak_c": 92, "ramp_s": 600})
           for t in _daily(start, days, 14.0) for k in (2, 5) if t < h),
         Fault("powercap", at=0.45 * h, gpu=g(4), duration=6 * 3600)],
        # Hardware trouble: a double-bit ECC error, a growing ECC trend, then a GPU falls off the bus.
        [Fault("xid", at=0.40 * h, gpu=g(1), code=48), Fault("ecc_corrected", at=0.2 * h, gpu=g(6),
                                                             params={"per_hour": 25}),
         Fault("xid", at=0.70 * h, gpu=g(3), code=79)],
        # A slow GPU (85% of its peers), a contained error, a short NVML hang; and, live, a GPU that
        # falls off the bus two and a half minutes into the demo and is back four minutes later
        # (the node power-cycled), so the whole alert path can be watched: firing, then resolved.
        [Fault("slow", at=0.0, gpu=g(6), params={"factor": 0.85}), Fault("xid", at=0.55 * h, gpu=g(0), code=94),
         Fault("nvml_timeout", at=0.85 * h, gpu=g(2), duration=900),
         Fault("xid", at=h + LIVE_FAULT_AFTER, gpu=g(5), code=79, duration=240)],
    ]
    out = []
    for i in range(nodes):
        load = Load(busy_fraction=0.7, daily_amplitude=0.2, weekend_dip=0.25,
                    idle_allocated_fraction=0.08 if i % 4 == 0 else 0.03)
        faults = tuple(kinds[i % 4]) if i < 4 or i % 3 == 0 else ()
        out.append(SimNode(f"node-{i + 1:02d}", Scenario(model="H100", gpus=gpus, load=load, faults=faults), seed=i))
    return out


def _fake(node: SimNode, start: float, clock: object = time.time) -> FakeNVML:
    return FakeNVML(node.scenario, clock=clock, start=start, seed=node.seed, node_name=node.name)  # type: ignore[arg-type]


def backfill_node(db_url: str, node: SimNode, start: float, end: float, measured: Sequence[Measured] = ()) -> int:
    """Replay one node's history on a simulated clock through the collector and the write path, and
    its nightly benchmarks from the real run ``measured``."""
    now = [start]
    fake = _fake(node, start, clock=lambda: now[0])
    collector = NvmlCollector(fake, clock=lambda: now[0], event_thread=False)
    collector.check()
    engine = make_engine(db_url, busy_timeout_ms=60_000)
    writer = Writer(engine)
    info = {"name": node.name, "cluster": "demo", "agent_version": AGENT_VERSION,
            "driver_version": collector.driver_version, "cuda_driver_version": collector.cuda_driver_version}
    batches: list[Batch] = []
    t, written = start, 0
    while t < end:
        now[0] = t
        batches.append(Batch(new_batch_id(), {**info, "gpu_count": node.scenario.gpus}, t, collector.collect()))
        if len(batches) >= 256:
            writer.write_many(batches)
            written += len(batches)
            batches = []
        t += RECENT_STEP if end - t <= DAY else OLD_STEP
    if batches:
        writer.write_many(batches)
        written += len(batches)
    collector.close()
    if measured:
        _benchmarks(engine, node, fake, start, end, measured)
    engine.dispose()
    return written


def _benchmarks(engine: Engine, node: SimNode, fake: FakeNVML, start: float, end: float,
                measured: Sequence[Measured]) -> None:
    """A nightly benchmark round at 03:00 UTC: the real run scaled by each GPU's speed in the
    scenario (``gpufleet.demobench``), so the slow GPU stands out as it would on real hardware."""
    from sqlalchemy import select

    from db.models import Gpu, Node

    spec = get_model(node.scenario.model)
    nights = [t for t in _daily(start, math.ceil((end - start) / DAY), 3.0) if start + t < end]
    with engine.begin() as conn:
        node_id = conn.execute(select(Node.id).where(Node.name == node.name)).scalar_one()
        gpus = dict(conn.execute(select(Gpu.index, Gpu.id).where(Gpu.node_id == node_id)).all())
        write_history(conn, measured, node=node.name, node_id=node_id, gpus=gpus, nights=nights,
                      speed=fake.speed_factor, gpu_model=spec.name if spec is not None else node.scenario.model,
                      driver=node.scenario.driver_version, start=start)


def build_live(db_url: str, workdir: Path, nodes: list[SimNode], start: float, interval: float) -> list[Agent]:
    agents = []
    for node in nodes:
        cfg = AgentConfig(db_url=db_url, interval=interval, node_name=node.name, cluster="demo",
                          spool_dir=str(workdir / "spool" / node.name), metrics_addr=None)
        collectors = [NvmlCollector(_fake(node, start)), HostCollector(), NetworkCollector(), StorageCollector()]
        agents.append(build_agent(cfg, collectors=collectors))  # type: ignore[arg-type]
    return agents


def format_summary(engine: object) -> str:
    rows = fleet_summary(engine)  # type: ignore[arg-type]
    now = time.time()
    lines = [f"{'node':<10} {'GPUs ok':>8} {'util':>6} {'max temp':>9} {'power':>9} {'throttled':>10} "
             f"{'events':>7} {'critical':>9} {'seen':>6}"]
    for r in rows:
        util = f"{r.utilization_ratio:.0%}" if r.utilization_ratio is not None else "n/a"
        temp = f"{r.temperature_max_celsius:.0f} °C" if r.temperature_max_celsius is not None else "n/a"
        power = f"{r.power_watts / 1000:.2f} kW" if r.power_watts is not None else "n/a"
        lines.append(f"{r.node:<10} {f'{r.gpus_ok}/{r.gpus}':>8} {util:>6} {temp:>9} {power:>9} "
                     f"{r.throttled:>10} {r.events:>7} {r.critical_events:>9} {now - r.last_seen:>5.0f}s")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.gpus_per_node < 1 or args.history_days < 0:
        from gpufleet.cli import UserError

        raise UserError("--nodes and --gpus-per-node must be at least 1, --history-days at least 0")
    if not args.verbose:
        for noisy in ("alembic", "collectors", "agent"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="gpufleet-demo-"))
    db_url = args.db or f"sqlite:///{workdir / 'gpufleet.db'}"
    engine = make_engine(db_url, busy_timeout_ms=30_000)
    upgrade(engine)
    now = time.time()
    history_s = args.history_days * DAY
    start = now - history_s
    nodes = fleet(args.nodes, args.gpus_per_node, start, max(history_s, 1.0))
    print(f"gpufleet demo: {args.nodes} simulated nodes x {args.gpus_per_node} GPUs, store {db_url}", flush=True)
    if history_s > 0:
        began = time.monotonic()
        measured = measure_once()
        print(f"benchmarks measured once on this machine ({', '.join(m.workload for m in measured)}, "
              f"{time.monotonic() - began:.1f} s); the nightly history scales them per simulated GPU", flush=True)
        print(f"backfilling {args.history_days:g} days of history ...", flush=True)
        workers = max(1, min(len(nodes), os.cpu_count() or 1))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(backfill_node, [db_url] * len(nodes), nodes, [start] * len(nodes), [now] * len(nodes),
                          [measured] * len(nodes)))
        refresh(engine)
        slow = [f for f in stragglers.refresh(engine, now=now) if f.event_uid is not None]
        print(f"history written in {time.monotonic() - began:.0f} s; benchmark stragglers: "
              f"{', '.join(sorted({f.where for f in slow})) or 'none'}", flush=True)
    agents = build_live(db_url, workdir, nodes, start, args.interval)
    threads = [threading.Thread(target=a.run, name=a.node["name"], daemon=True) for a in agents]
    # The controller evaluates the shipped rule pack, keeps health states and, with
    # --alerts-config, delivers webhooks; it also keeps the rollups fresh.
    from alerts.config import load_config
    from alerts.controller import Controller
    from gpufleet.alertscli import controller_tasks

    controller = Controller(make_engine(db_url, busy_timeout_ms=30_000), load_config(args.alerts_config),
                            tasks=controller_tasks())
    threads.append(threading.Thread(target=controller.run, name="controller", daemon=True))
    for t in threads:
        t.start()
    dashboard = None
    if not args.no_dashboard:
        from dashboard.server import command

        dashboard = subprocess.Popen(command(db_url, args.port, "127.0.0.1"), env={**os.environ,
                                                                                     "GPUFLEET_DB_URL": db_url})
        print(f"dashboard: http://127.0.0.1:{args.port}", flush=True)
    print("press Ctrl-C to stop\n", flush=True)

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: agents flushed, dashboard stopped

    signal.signal(signal.SIGTERM, _terminate)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            wait = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            time.sleep(wait)
            if args.no_dashboard:
                print(time.strftime("%H:%M:%S"), flush=True)
                print(format_summary(engine), "\n", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for a in agents:
            a.stop()
        controller.stop()
        for t in threads:
            t.join(timeout=15)
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=15)
        engine.dispose()
    print(f"store kept at {db_url}")
    return 0
