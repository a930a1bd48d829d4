"""``gpufleet demo``: a simulated fleet writing into a fresh SQLite store, with a live summary.

Each simulated node is a real agent (the same loop, spool and write path as production) whose
NVML is the fake, driven by one of the packaged fault scenarios.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.daemon import build_agent
from agent.loop import Agent
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.host import HostCollector
from collectors.nvml import NvmlCollector
from db.engine import make_engine, upgrade
from db.queries import fleet_summary

log = logging.getLogger(__name__)

# One scenario per node, so the demo shows each kind of trouble somewhere in the fleet.
NODE_SCENARIOS = ["mixed", "thermal", "xid79", "slow-gpu", "powercap", "xid48", "healthy", "nvml-timeout"]


def build_fleet(db_url: str, workdir: Path, *, nodes: int, gpus_per_node: int, interval: float,
                seed: int = 0) -> list[Agent]:
    agents = []
    for i in range(nodes):
        name = f"node-{i + 1:02d}"
        scenario = NODE_SCENARIOS[i % len(NODE_SCENARIOS)]
        cfg = AgentConfig(db_url=db_url, interval=interval, node_name=name, cluster="demo",
                          spool_dir=str(workdir / "spool" / name), metrics_addr=None, simulate=scenario)
        fake = FakeNVML(load_scenario(scenario), node_name=name, seed=seed, gpu_count=gpus_per_node)
        collectors = [NvmlCollector(fake), HostCollector()]
        agents.append(build_agent(cfg, collectors=collectors))  # type: ignore[arg-type]
    return agents


def format_summary(engine_url: str, engine: object) -> str:
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
    workdir = Path(tempfile.mkdtemp(prefix="gpufleet-demo-"))
    db_url = args.db or f"sqlite:///{workdir / 'gpufleet.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    agents = build_fleet(db_url, workdir, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                         interval=args.interval)
    threads = [threading.Thread(target=a.run, name=a.node["name"], daemon=True) for a in agents]
    for t in threads:
        t.start()
    print(f"gpufleet demo: {args.nodes} simulated nodes x {args.gpus_per_node} GPUs into {db_url}")
    print("press Ctrl-C to stop\n", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(min(max(args.interval, 1.0), 5.0) if deadline is None
                       else max(0.0, min(5.0, deadline - time.monotonic())))
            print(time.strftime("%H:%M:%S"), flush=True)
            print(format_summary(db_url, engine), "\n", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for a in agents:
            a.stop()
        for t in threads:
            t.join(timeout=15)
        engine.dispose()
    print(f"store kept at {db_url}")
    return 0
