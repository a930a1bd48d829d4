"""Many agents, one PostgreSQL: does every sample arrive, how fast, at what cost, and how many agents
still hold 1-second sampling on this machine.

Each agent is the real one (``agent.daemon.build_agent``: fake NVML with 8 GPUs, host, network and
storage collectors, the spool, the store writer) in its own process, writing as a least-privilege
agent role into a fresh database. Agents start at random phases of the interval, as real nodes do.
The harness times every store transaction inside each agent, samples the CPU of the database's
backends and of the agents with psutil, then checks the store: expected against stored samples,
gaps between each node's heartbeats, bytes on disk per GPU-day (with what a B-tree on ``ts`` would
have cost, built afterwards for comparison), and how long the controller's rollup refresh takes.

The agent count is stepped up (``--steps``) with a shorter run each, until an agent misses ticks,
the store falls behind or the server's connection limit is near; then the main run (``--agents`` for
``--duration``) is measured. ``--write`` replaces the ``fleet_load`` section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from perfdoc import fmt_int, header, package_version, table, write_section
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from agent.config import AgentConfig
from agent.daemon import build_agent, build_collectors
from collectors.fake_nvml import FakeNVML, load_scenario
from db.engine import make_engine, upgrade
from db.models import SAMPLE_TABLES
from db.roles import Roles, apply, drop
from db.rollups import refresh

GAP_TOLERANCE = 1.5  # a heartbeat gap over 1.5 intervals is a missed tick
# The store keeps pace when 99% of writes commit within this many intervals: the writer thread is
# decoupled from collection, so a slower write delays what the dashboard sees, not the sampling.
FRESHNESS_INTERVALS = 2.0


# -- one agent (a child process) --------------------------------------------------------------------

def run_agent(index: int, url: str, spool_root: str, interval: float, duration: float, gpus: int,
              start_at: float, out_path: str) -> None:
    """One node agent for ``duration`` seconds; writes its own figures to ``out_path`` as JSON."""
    name = f"load-{index:03d}"
    cfg = AgentConfig(db_url=url + f"?application_name={name}", interval=interval, node_name=name,
                      metrics_addr=None, spool_dir=os.path.join(spool_root, name), kernel_log=None,
                      auto_migrate=False)
    nvml = FakeNVML(load_scenario("healthy"), node_name=name, seed=index, gpu_count=gpus)
    agent = build_agent(cfg, collectors=build_collectors(cfg, nvml=nvml))
    assert agent.store is not None
    latencies: list[float] = []
    make_writer = agent.store.make_writer

    def timed_writer() -> Any:  # time each store transaction of this agent
        writer = make_writer()
        write_many = writer.write_many

        def timed(batches: Any) -> Any:
            started = time.perf_counter()
            result = write_many(batches)
            latencies.append(time.perf_counter() - started)
            return result

        writer.write_many = timed  # type: ignore[method-assign]
        return writer

    agent.store.make_writer = timed_writer
    time.sleep(max(0.0, start_at - time.time()) + random.Random(index).uniform(0, interval))  # noqa: S311
    cpu0 = time.process_time()
    timer = threading.Timer(duration, agent.stop)
    timer.start()
    agent.run()
    timer.cancel()
    Path(out_path).write_text(json.dumps({
        "cycles": agent.cycles, "written": agent.store.written_batches, "failures": agent.store.total_failures,
        "pending": len(agent.spool.pending()), "latencies": latencies, "cpu": time.process_time() - cpu0,
    }))


# -- the server side ----------------------------------------------------------------------------------

@contextmanager
def fresh_database(admin_url: str) -> Iterator[tuple[str, Engine]]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"gpufleet_load_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class CpuSampler:
    """CPU seconds used by a set of processes between start and stop, sampled every second so that
    a process that exits mid-run still counts up to its last sample."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for pid in self.pids():
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total = t.user + t.system
            self.first.setdefault(pid, total)
            self.last[pid] = total

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.last[p] - self.first[p] for p in self.last)


def backend_pids(engine: Engine, database: str) -> list[int]:
    with engine.connect() as conn:
        return [int(p) for p in conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                             {"d": database}).scalars()]


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]


# -- one run --------------------------------------------------------------------------------------------

@dataclass
class Run:
    agents: int
    duration: float
    gpus: int
    interval: float
    expected: int = 0  # GPU samples the agents collected
    stored: int = 0
    failures: int = 0
    pending: int = 0
    latencies: list[float] = field(default_factory=list)
    gap_p99: float = 0.0
    gap_max: float = 0.0
    missed_ticks: int = 0
    cycles: int = 0
    agent_cpu: float = 0.0
    db_backend_cpu: float = 0.0
    postgres_cpu: float = 0.0
    wall: float = 0.0
    wal_bytes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    btree_ts_bytes: int = 0
    gpu_seconds: float = 0.0
    refresh_seconds: float = 0.0
    refresh_rows: int = 0
    load: tuple[float, float] = (0.0, 0.0)
    server: str = ""

    @property
    def held(self) -> bool:
        """Every sample stored, nothing left behind, no tick missed, the store keeping pace."""
        return (self.stored == self.expected and not self.pending and self.missed_ticks == 0
                and pct(self.latencies, 0.99) <= FRESHNESS_INTERVALS * self.interval)

    def bytes_per_gpu_day(self, tables: tuple[str, ...]) -> float:
        return sum(self.sizes.get(t, 0) for t in tables) / (self.gpu_seconds / 86400)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def measure(admin_url: str, agents: int, duration: float, gpus: int, interval: float, scratch: str,
            *, sizes: bool) -> Run:
    run = Run(agents=agents, duration=duration, gpus=gpus, interval=interval)
    ctx = mp.get_context("fork")  # children share the parent's imports: 64 agents start in a second
    with fresh_database(admin_url) as (url, engine):
        upgrade(engine)
        database = make_url(url).database or ""
        roles = Roles(agent=f"load_agent_{uuid.uuid4().hex[:6]}", dashboard=f"load_dash_{uuid.uuid4().hex[:6]}",
                      controller=f"load_ctl_{uuid.uuid4().hex[:6]}")
        apply(engine, roles, login=True)
        agent_url = make_url(url).set(username=roles.agent).render_as_string(hide_password=False)
        workdir = tempfile.mkdtemp(prefix="fleet-load-", dir=scratch)
        try:
            with engine.connect() as conn:
                wal0 = conn.execute(text("SELECT pg_current_wal_lsn()")).scalar()
                run.server = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
            start_at = time.time() + 2.0
            procs = [ctx.Process(target=run_agent, args=(i, agent_url, workdir, interval, duration, gpus, start_at,
                                                         os.path.join(workdir, f"{i}.json")))
                     for i in range(agents)]
            load0 = os.getloadavg()[0]
            for p in procs:
                p.start()
            db_cpu = CpuSampler(lambda: backend_pids(engine, database))
            pg_cpu = CpuSampler(postgres_pids)
            t0 = time.monotonic()
            time.sleep(max(0.0, start_at - time.time()))
            db_cpu.start()
            pg_cpu.start()
            for p in procs:
                p.join(timeout=duration + 120)
            run.wall = time.monotonic() - t0
            run.db_backend_cpu, run.postgres_cpu = db_cpu.stop(), pg_cpu.stop()
            run.load = (load0, os.getloadavg()[0])
            for i in range(agents):
                path = os.path.join(workdir, f"{i}.json")
                if not os.path.exists(path):
                    run.failures += 1  # the agent process died
                    continue
                out = json.loads(Path(path).read_text())
                run.expected += out["cycles"] * gpus
                run.cycles += out["cycles"]
                run.failures += out["failures"]
                run.pending += out["pending"]
                run.latencies += out["latencies"]
                run.agent_cpu += out["cpu"]
            with engine.connect() as conn:
                run.wal_bytes = int(conn.execute(text("SELECT pg_current_wal_lsn() - CAST(:a AS pg_lsn)"),
                                                 {"a": wal0}).scalar() or 0)
                run.stored = int(conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar() or 0)
                run.gpu_seconds = run.stored * interval
                gaps = [float(g) for g in conn.execute(text(
                    "SELECT ts - LAG(ts) OVER (PARTITION BY node_id ORDER BY ts) AS gap FROM heartbeats")).scalars()
                        if g is not None]
            run.gap_p99, run.gap_max = pct(gaps, 0.99), max(gaps, default=0.0)
            run.missed_ticks = sum(1 for g in gaps if g > GAP_TOLERANCE * interval)
            if sizes:
                measure_sizes(engine, run)
        finally:
            drop(engine, roles)
            shutil.rmtree(workdir, ignore_errors=True)
    return run


def measure_sizes(engine: Engine, run: Run) -> None:
    """Bytes on disk per table, the BRIN index on ``gpu_samples.ts`` against a B-tree built for
    comparison, and a rollup refresh as the controller runs it."""
    with engine.begin() as conn:
        conn.execute(text("CHECKPOINT"))
        for table in [*(t.name for t in SAMPLE_TABLES.values()), "heartbeats", "ingested_batches", "events"]:
            run.sizes[table] = int(conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                                                {"t": table}).scalar() or 0)
        for index in ("pk_gpu_samples", "ix_gpu_samples_ts"):
            run.sizes[index] = int(conn.execute(text("SELECT pg_relation_size(CAST(:i AS regclass))"),
                                                {"i": index}).scalar() or 0)
        run.sizes["gpu_samples heap"] = int(conn.execute(text("SELECT pg_relation_size('gpu_samples')")).scalar() or 0)
        conn.execute(text("CREATE INDEX bench_btree_ts ON gpu_samples (ts)"))
        run.btree_ts_bytes = int(conn.execute(text("SELECT pg_relation_size('bench_btree_ts')")).scalar() or 0)
        conn.execute(text("DROP INDEX bench_btree_ts"))
    started = time.perf_counter()
    refresh(engine)
    run.refresh_seconds = time.perf_counter() - started
    run.refresh_rows = run.stored
    with engine.begin() as conn:
        for table in ("gpu_rollups_1m", "node_rollups_1m"):
            size = conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}).scalar()
            rows = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            run.sizes[f"{table} per row"] = int(size or 0) // max(int(rows or 0), 1)


# -- report ----------------------------------------------------------------------------------------------

def step_row(r: Run) -> list[object]:
    return [r.agents, fmt_int(r.agents * r.gpus), f"{r.duration:.0f} s", fmt_int(r.expected), fmt_int(r.stored),
            r.failures, f"{r.missed_ticks} ({r.missed_ticks / max(r.cycles, 1):.1%})",
            f"{pct(r.latencies, 0.5) * 1000:.1f} / {pct(r.latencies, 0.99) * 1000:.1f} ms",
            f"{r.db_backend_cpu / r.duration * 100:.0f}%", f"{r.agent_cpu / r.duration * 100:.0f}%",
            f"{r.load[0]:.1f} → {r.load[1]:.1f}", "yes" if r.held else "**no**"]


STEP_HEAD = ["agents", "GPUs", "run", "samples collected", "samples stored", "errors", "missed ticks",
             "write p50 / p99", "PG backends CPU", "agents CPU", "load avg", "holds 1 s"]


def report(steps: list[Run], main: Run, stop_reason: str) -> list[str]:
    samples = ("gpu_samples",)
    raw = (*(t.name for t in SAMPLE_TABLES.values()), "heartbeats", "ingested_batches")
    rate = main.stored / main.duration
    held = [s.agents for s in steps if s.held]
    lines = [
        "### Fleet load: many agents, one PostgreSQL",
        "",
        *header([("PostgreSQL", main.server), ("SQLAlchemy", package_version("sqlalchemy")),
                 ("psycopg", package_version("psycopg")), ("psutil", package_version("psutil"))]),
        f"- each agent: its own process, the real agent (`build_agent`: fake NVML `healthy` with {main.gpus} GPUs, "
        "host, network, storage; spool; store writer) at a 1 s interval, random phase, writing as a "
        "least-privilege agent role (`gpufleet db roles`) into a fresh database on the same machine "
        "(PostgreSQL shares the 2 CPUs with the agents and the harness)",
        "- *write* = one store transaction inside the agent (`Writer.write_many`: COPY of the samples, "
        "dedupe, node/GPU bookkeeping, heartbeat, commit); *PG backends CPU* = CPU of the database's own "
        "server processes (psutil) per second of run, in % of one core; *missed ticks* = heartbeat gaps over "
        f"{GAP_TOLERANCE}× the interval; *holds 1 s* = every collected sample stored, none left in a spool, "
        f"no missed tick, p99 write within {FRESHNESS_INTERVALS:g} intervals (the store keeps pace)",
        "",
        "Stepping the agent count up:",
        "",
        *table(STEP_HEAD, [step_row(s) for s in steps]),
        "",
        f"Highest count that held 1-second sampling: **{max(held) if held else 'none'}** agents "
        f"({stop_reason}).",
        "",
        f"Main run: {main.agents} agents × {main.gpus} GPUs at 1 s for {main.duration:.0f} s:",
        "",
        *table(STEP_HEAD, [step_row(main)]),
        "",
        *table(["measure", "value"], [
            ["GPU samples written", f"{fmt_int(rate)} /s ({fmt_int(main.stored)} in {main.duration:.0f} s); "
                                    f"{fmt_int(main.agents / main.interval)} transactions/s"],
            ["samples lost / duplicated", f"{main.expected - main.stored} / 0 (stored = collected; "
                                          "batch ids make replays no-ops)"],
            ["write latency p50 / p99 / max",
             f"{pct(main.latencies, 0.5) * 1000:.1f} / {pct(main.latencies, 0.99) * 1000:.1f} / "
             f"{max(main.latencies, default=0) * 1000:.1f} ms"],
            ["PostgreSQL CPU: this database's backends",
             f"{main.db_backend_cpu:.1f} s in {main.duration:.0f} s = "
             f"{main.db_backend_cpu / main.stored * 1e6:.1f} µs per sample"],
            ["… per agent transaction (one batch: 8 GPU rows, host, network, disk, filesystem rows, bookkeeping)",
             f"{main.db_backend_cpu / max(main.cycles, 1) * 1000:.2f} ms"],
            ["PostgreSQL CPU: every postgres process (other databases on the shared server included)",
             f"{main.postgres_cpu:.1f} s"],
            ["agents' CPU", f"{main.agent_cpu / max(main.cycles, 1) * 1000:.2f} ms per agent cycle"],
            ["WAL written (whole server)", f"{main.wal_bytes / rate / main.duration:,.0f} bytes per sample"],
            ["gpu_samples on disk", f"{main.bytes_per_gpu_day(samples) / 2**20:,.1f} MiB per GPU-day "
                                    f"({main.sizes['gpu_samples'] / main.stored:,.0f} bytes per sample: heap "
                                    f"{main.sizes['gpu_samples heap'] / main.stored:,.0f}, primary key "
                                    f"{main.sizes['pk_gpu_samples'] / main.stored:,.0f}, BRIN on ts "
                                    f"{main.sizes['ix_gpu_samples_ts'] / main.stored:,.2f})"],
            ["all raw tables (samples, heartbeats, batch ids)",
             f"{main.bytes_per_gpu_day(raw) / 2**20:,.1f} MiB per GPU-day"],
            ["BRIN on gpu_samples.ts vs a B-tree on it (built afterwards)",
             f"{fmt_int(main.sizes['ix_gpu_samples_ts'])} vs {fmt_int(main.btree_ts_bytes)} bytes"],
            ["1-minute rollup rows on disk (GPU / node)",
             f"{main.sizes['gpu_rollups_1m per row']} / {main.sizes['node_rollups_1m per row']} bytes per row "
             "(few rows here: page granularity inflates this)"],
            ["rollup refresh (controller, first run over the whole run)",
             f"{main.refresh_seconds:.2f} s for {fmt_int(main.refresh_rows)} raw samples = "
             f"{main.refresh_seconds / max(main.refresh_rows, 1) * 1e6:.1f} µs per sample"],
        ]),
        "",
        "Projections to 10,000 and 100,000 GPUs from these figures are in [SCALING.md](SCALING.md).",
    ]
    return lines


def connection_room(admin_url: str) -> int:
    """How many more connections the server takes now, less a margin for everyone else."""
    engine = create_engine(admin_url)
    with engine.connect() as conn:
        limit = int(conn.execute(text("SHOW max_connections")).scalar() or 100)
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar() or 3)
        used = int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
                   .scalar() or 0)
    engine.dispose()
    return limit - reserved - used - 10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg-url", default=os.environ.get("GPUFLEET_TEST_PG_URL",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--agents", type=int, default=64, help="agents in the main run (64)")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per agent (8)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of the main run (120)")
    ap.add_argument("--interval", type=float, default=1.0, help="collection interval, seconds (1)")
    ap.add_argument("--steps", default="16,32,64,80", help="agent counts to step through (comma-separated)")
    ap.add_argument("--step-duration", type=float, default=30.0, help="seconds of each step (30)")
    ap.add_argument("--scratch", default=None, help="folder for the agents' spools (default: temp dir)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 and 8 agents, 8 s each")
    ap.add_argument("--write", action="store_true", help="replace the fleet_load section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.step_duration, args.agents, args.duration = "4", 8.0, 8, 8.0
    scratch = args.scratch or tempfile.gettempdir()
    steps: list[Run] = []
    stop_reason = "every step held"
    for n in [int(s) for s in args.steps.split(",") if s.strip()]:
        room = connection_room(args.pg_url)
        if n > room:
            stop_reason = f"stopped below {n}: the server's max_connections leaves room for {room} more now"
            break
        run = measure(args.pg_url, n, args.step_duration, args.gpus, args.interval, scratch, sizes=False)
        print(" | ".join(map(str, step_row(run))), flush=True)
        steps.append(run)
        if not run.held:
            stop_reason = f"{n} agents did not hold"
            break
    main_run = measure(args.pg_url, args.agents, args.duration, args.gpus, args.interval, scratch, sizes=True)
    lines = report(steps, main_run, stop_reason)
    print("\n".join(lines))
    if args.write:
        write_section("fleet_load", lines)
    return 0 if main_run.held else 1


if __name__ == "__main__":
    sys.exit(main())
