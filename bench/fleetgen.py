"""A large, realistic fleet store for the page benchmark (``bench/pages.py``), written fast.

The ingest benchmark measures the write path; here only the data matters, so the sample rows go in
with raw ``sqlite3`` ``executemany`` into a database migrated by ``db.engine.upgrade`` (nodes, GPUs
and events go through ``db.writer.Writer``; rollups through ``db.rollups.refresh``, a day at a
time as the controller would). The same GPU utilization samples are written as OpenMetrics text, one
file per 2-hour TSDB block, for ``promtool tsdb create-blocks-from openmetrics``.

What the fleet does (deterministic for a seed):

- nodes of 8 GPUs, ``node-000`` …; three quarters in cluster ``train`` (H100), the rest in
  ``infer`` (H200); each node samples every ``step`` seconds at its own offset within the step;
- each GPU runs a sequence of jobs (exponential lengths, mean 4 h): busy with a per-job base
  utilization, idle but allocated (a process, < 5 %), or idle, with busy more likely in each node's
  afternoon (a daily cycle);
- a few "hot" nodes throttle thermally in their afternoons, busy GPUs sometimes hit the power cap;
- incidents with their events and sample statuses: two XID 79 falls off the bus (one recovered after
  5 h, one still lost at the end), an XID 48 double-bit ECC (10 min in error, then a pending row
  remap), an XID 94, an NVML timeout, a node whose agent was down for 3 h, application XIDs
  (13/31/43) about every 16 h, thermal warnings on the hot nodes each day;
- host, network (eth0, ib0), disk (nvme0n1) and filesystem (/) samples and a heartbeat per node and
  step; process samples for the last hour only (the dashboard reads only the newest within an hour);
- a daily quick benchmark suite per node (gemm TFLOP/s and llm-train MFU on every GPU) with two
  slow GPUs;
- alert state from the alerting controller itself (``alerts.controller.Controller`` with the default
  rules and the default configuration, which delivers nowhere), one cycle a minute over the last half
  hour with its clock pinned, plus one silence; re-run on a cached store when ``ALERTING_VERSION``
  changes, after bringing its schema to the current migration.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from collectors.records import Event, GpuInfo
from collectors.xid import classify
from db.engine import make_engine, upgrade
from db.models import HEARTBEATS, SAMPLE_TABLES, BenchResult, BenchRun
from db.rollups import refresh
from db.writer import Batch, Writer

GENERATOR_VERSION = 3  # bump when the data changes, so cached stores are rebuilt
ALERTING_VERSION = 1  # bump when the alerting step changes: it reruns on the cached store
CONTROLLER_MINUTES = 30  # the alerting controller's cycles: one a minute over the data's last half hour
T_END = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()  # the store's "now"
PER_NODE = 8
SLOT = 300  # job schedules are drawn per 5-minute slot
BLOCK = 7200  # Prometheus' smallest TSDB block
METRIC = "gpufleet_gpu_utilization_ratio"
MIB = 2**20
MODELS = {  # model: (memory total, power limit)
    "NVIDIA H100 80GB HBM3": (81559 * MIB, 700.0),
    "NVIDIA H200": (143771 * MIB, 700.0),
}
H100, H200 = list(MODELS)
GPU_COLS = [c.name for c in SAMPLE_TABLES["gpu"].columns]


def _insert_sql(table: Any, verb: str = "INSERT") -> str:
    cols = [c.name for c in table.columns]
    return (f'{verb} INTO "{table.name}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) '
            f'VALUES ({", ".join("?" for _ in cols)})')


@dataclass(frozen=True)
class Spec:
    gpus: int = 512
    days: float = 7.0
    step: int = 10
    seed: int = 1
    end: float = T_END

    @property
    def per_node(self) -> int:
        return min(PER_NODE, self.gpus)

    @property
    def nodes(self) -> int:
        return self.gpus // self.per_node

    @property
    def start(self) -> float:
        return self.end - self.days * 86400

    @property
    def timestamps(self) -> int:
        return int(round(self.days * 86400 / self.step))

    @property
    def samples(self) -> int:
        return self.timestamps * self.gpus

    def key(self) -> str:
        return f"{self.gpus}gpu-{self.days:g}d-{self.step}s-seed{self.seed}-v{GENERATOR_VERSION}"

    def check(self) -> None:
        if self.gpus % self.per_node:
            raise SystemExit(f"--gpus must be a multiple of {PER_NODE} (or at most {PER_NODE})")
        if not 1 <= self.step <= 3600 or 3600 % self.step:
            raise SystemExit("--step must divide 3600 (e.g. 10, 15, 30, 60)")
        if (self.days * 86400) % 3600:
            raise SystemExit("--days must be a whole number of hours")


def node_name(i: int) -> str:
    return f"node-{i:03d}"


def gpu_uuid(node: str, i: int) -> str:
    return "GPU-" + hashlib.md5(f"bench-pages/{node}/{i}".encode()).hexdigest()


@dataclass
class Incident:
    """Samples of ``gpu`` (global index; ``None``: the whole node) in [start, end) get ``status``
    (``"absent"``: no samples at all), with ``events`` at their times."""

    node: int
    gpu: int | None
    start: float
    end: float
    status: str
    error: str | None
    events: list[Event] = field(default_factory=list)


class Fleet:
    """The fleet's deterministic plan: nodes, GPUs, job schedules, incidents and benchmark runs."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        s = spec
        rng = np.random.default_rng(s.seed)
        self.node_names = [node_name(i) for i in range(s.nodes)]
        train = max(1, (s.nodes * 3) // 4) if s.nodes > 1 else 1
        self.cluster = ["train" if i < train else "infer" for i in range(s.nodes)]
        self.model = [H100 if i < train else H200 for i in range(s.nodes)]
        self.offset = np.array([1 + (i * 7) % max(1, s.step - 1) for i in range(s.nodes)], dtype=np.float64)
        if s.step == 1:
            self.offset[:] = 0.5
        self.peak_hour = rng.uniform(12, 18, s.nodes)  # each node's busiest hour (UTC)
        g_node = np.repeat(np.arange(s.nodes), s.per_node)
        self.g_node = g_node
        self.g_index = np.tile(np.arange(s.per_node), s.nodes)
        self.mem_total = np.array([MODELS[self.model[n]][0] for n in g_node], dtype=np.float64)
        self.power_limit = np.array([MODELS[self.model[n]][1] for n in g_node])
        hot = {n for n in (0, s.nodes // 3, (2 * s.nodes) // 3) if n < s.nodes}
        self.hot = np.array([n in hot for n in range(s.nodes)])
        self._schedules(rng)
        self.ecc_corrected = rng.choice([0, 0, 0, 0, 1, 2, 7], s.gpus).astype(np.int64)
        self.pcie_replay = rng.choice([0, 0, 0, 0, 0, 0, 3], s.gpus).astype(np.int64)
        self.incidents = self._incidents(rng)
        self.remap_pending_from: dict[int, float] = {}
        for inc in self.incidents:
            if inc.gpu is not None and any(e.code == "48" for e in inc.events):
                self.remap_pending_from[inc.gpu] = inc.start
        self.slow = {(min(17, s.nodes - 1) * s.per_node + min(5, s.per_node - 1)): 0.82,
                     (min(44, s.nodes - 1) * s.per_node): 0.86}

    # -- jobs -------------------------------------------------------------------------------------

    def _schedules(self, rng: np.random.Generator) -> None:
        """Per 5-minute slot and GPU: state (0 idle, 1 idle-allocated, 2 busy), base utilization and
        memory of the job."""
        s = self.spec
        slots = int(math.ceil(s.days * 86400 / SLOT)) + 1
        self.state = np.zeros((slots, s.gpus), dtype=np.int8)
        self.base = np.zeros((slots, s.gpus), dtype=np.float32)
        self.job_mem = np.zeros((slots, s.gpus), dtype=np.float32)
        for g in range(s.gpus):
            node = self.g_node[g]
            k = -int(rng.integers(0, 48))  # jobs started before the window
            while k < slots:
                length = int(np.clip(rng.exponential(4 * 3600), 1200, 36 * 3600) // SLOT) or 1
                hour = ((s.start + max(k, 0) * SLOT) / 3600) % 24
                p_busy = 0.62 + 0.28 * math.cos(2 * math.pi * (hour - self.peak_hour[node]) / 24)
                r = rng.random()
                lo, hi = max(k, 0), min(k + length, slots)
                if hi > lo:
                    if r < p_busy:
                        self.state[lo:hi, g] = 2
                        self.base[lo:hi, g] = rng.uniform(0.55, 0.97)
                        self.job_mem[lo:hi, g] = rng.uniform(0.35, 0.95)
                    elif r < p_busy + 0.12:
                        self.state[lo:hi, g] = 1
                        self.job_mem[lo:hi, g] = rng.uniform(0.05, 0.7)
                k += length

    # -- incidents --------------------------------------------------------------------------------

    def _at(self, fraction: float) -> float:
        """A sample time of node 0 at ``fraction`` of the window (on the step grid)."""
        s = self.spec
        return s.start + round(fraction * s.timestamps) * s.step

    def _ts(self, node: int, t: float) -> float:
        """The first sample time of ``node`` at or after ``t``."""
        s = self.spec
        k = math.ceil((t - s.start - self.offset[node]) / s.step)
        return s.start + max(0, k) * s.step + float(self.offset[node])

    def _event(self, ts: float, kind: str, node: int, gpu: int | None, severity: str, message: str,
               **kw: Any) -> Event:
        idx = None if gpu is None else int(self.g_index[gpu])
        name = self.node_names[node]
        return Event(ts, kind, severity, message, gpu_index=idx,
                     gpu_uuid=None if gpu is None else gpu_uuid(name, idx or 0), source="nvml",
                     uid=hashlib.md5(f"{kind}-{name}-{idx}-{ts}-{message}".encode()).hexdigest(), **kw)

    def _xid(self, ts: float, node: int, gpu: int, code: int) -> Event:
        info = classify(code)
        return self._event(ts, "xid", node, gpu, info.severity,
                           f"XID {code} ({info.mnemonic}) on GPU {self.g_index[gpu]}", code=str(code),
                           category=info.category, fatal=info.fatal, recommended_action=info.recommended_action,
                           details={"mnemonic": info.mnemonic})

    def _recovered(self, ts: float, node: int, gpu: int) -> Event:
        return self._event(ts, "gpu_recovered", node, gpu, "info", f"GPU {self.g_index[gpu]} reports again",
                           category="gpu-hardware")

    def _incidents(self, rng: np.random.Generator) -> list[Incident]:
        s = self.spec
        n, per = s.nodes, s.per_node

        def gpu(node: int, i: int) -> int:
            return min(node, n - 1) * per + min(i, per - 1)

        out: list[Incident] = []
        # XID 79, GPU lost for 5 hours, then reset and back.
        g = gpu(12, 3)
        t = self._ts(int(self.g_node[g]), self._at(0.30))
        back = self._ts(int(self.g_node[g]), t + 5 * 3600)
        lost = self._event(t, "gpu_lost", int(self.g_node[g]), g, "critical", f"GPU {self.g_index[g]} lost",
                           fatal=True, category="gpu-hardware", recommended_action=classify(79).recommended_action)
        out.append(Incident(int(self.g_node[g]), g, t, back, "lost", "GPU is lost",
                            [self._xid(t, int(self.g_node[g]), g, 79), lost,
                             self._recovered(back, int(self.g_node[g]), g)]))
        # XID 79 five hours before the end: still lost.
        g = gpu(41, 6)
        t = self._ts(int(self.g_node[g]), s.end - 5 * 3600)
        lost = self._event(t, "gpu_lost", int(self.g_node[g]), g, "critical", f"GPU {self.g_index[g]} lost",
                           fatal=True, category="gpu-hardware", recommended_action=classify(79).recommended_action)
        out.append(Incident(int(self.g_node[g]), g, t, s.end + 1, "lost", "GPU is lost",
                            [self._xid(t, int(self.g_node[g]), g, 79), lost]))
        # XID 48 (double-bit ECC): in error for 10 minutes, then a pending row remap until the end.
        g = gpu(27, 1)
        nd = int(self.g_node[g])
        t = self._ts(nd, self._at(0.55))
        back = self._ts(nd, t + 600)
        out.append(Incident(nd, g, t, back, "error", "NVML: GPU requires reset", [
            self._xid(t, nd, g, 48),
            self._event(t, "ecc", nd, g, "critical", f"GPU {self.g_index[g]}: 2 uncorrectable ECC error(s)",
                        code="uncorrected", category="gpu-hardware", fatal=True,
                        recommended_action=classify(48).recommended_action),
            self._event(back, "ecc", nd, g, "warning", f"GPU {self.g_index[g]}: row remapping pending",
                        code="remap_pending", category="gpu-hardware"),
            self._recovered(back, nd, g)]))
        # XID 94 (contained ECC error): 20 minutes in error.
        g = gpu(33, 2)
        nd = int(self.g_node[g])
        t = self._ts(nd, self._at(0.70))
        back = self._ts(nd, t + 1200)
        out.append(Incident(nd, g, t, back, "error", "NVML: unknown error",
                            [self._xid(t, nd, g, 94), self._recovered(back, nd, g)]))
        # An NVML timeout for two minutes.
        g = gpu(50, 0)
        nd = int(self.g_node[g])
        t = self._ts(nd, self._at(0.62))
        out.append(Incident(nd, g, t, self._ts(nd, t + 120), "error", "NVML: timeout", [
            self._event(t, "nvml_error", nd, g, "warning", "nvmlDeviceGetUtilizationRates: timeout",
                        code="NVML_ERROR_TIMEOUT", category="host")]))
        # A node whose agent was down for 3 hours (no samples), e.g. a kernel upgrade.
        nd = min(58, n - 1)
        t = self._ts(nd, self._at(0.45))
        out.append(Incident(nd, None, t, self._ts(nd, t + 3 * 3600), "absent", None, [
            self._event(t - s.step, "agent_down", nd, None, "warning", "agent stopping: host maintenance",
                        category="maintenance")]))
        # Application XIDs on busy GPUs, about one every 16 hours; thermal warnings on hot nodes daily.
        events: list[Event] = []
        for _ in range(max(1, int(s.days * 1.5))):
            t0 = s.start + rng.uniform(0.02, 0.98) * s.days * 86400
            g = int(rng.integers(0, s.gpus))
            events.append(self._xid(self._ts(int(self.g_node[g]), t0), int(self.g_node[g]), g,
                                    int(rng.choice([13, 31, 43, 13]))))
        for nd in np.flatnonzero(self.hot):
            for day in range(int(math.ceil(s.days))):
                t0 = s.start + day * 86400 + (self.peak_hour[nd] - 2) * 3600
                if s.start <= t0 < s.end:
                    for i in range(per):
                        g = int(nd) * per + i
                        events.append(self._event(self._ts(int(nd), t0), "thermal", int(nd), g, "warning",
                                                  f"GPU {i}: thermal slowdown", category="gpu-hardware",
                                                  code="sw_thermal"))
        for i in range(max(1, int(s.days // 3))):
            g = gpu(5 + i, i)
            t0 = self._ts(int(self.g_node[g]), s.start + (i + 0.5) * 3 * 86400)
            if t0 < s.end:
                events.append(self._xid(t0, int(self.g_node[g]), g, 63))
        out.append(Incident(0, None, 0, 0, "ok", None, events))  # events only
        return out

    # -- benchmarks -------------------------------------------------------------------------------

    def bench_runs(self) -> Iterator[tuple[int, int, str, float, float, str]]:
        """(node, gpu, workload, started, value, unit+metric) of each daily quick run."""
        s = self.spec
        for nd in range(s.nodes):
            for day in range(int(math.ceil(s.days))):
                started = s.start + day * 86400 + (3 + (nd % 5) * 0.25) * 3600
                if not s.start <= started < s.end - 600:
                    continue
                for i in range(s.per_node):
                    g = nd * s.per_node + i
                    slow = self.slow.get(g, 1.0)
                    wobble = 1 + ((nd * 31 + i * 17 + day * 7) % 21 - 10) / 1000
                    base = 760.0 if self.model[nd] == H200 else 745.0
                    yield nd, g, "gemm", started, base * slow * wobble, "TFLOP/s:tflops"
                    yield nd, g, "llm-train", started + 120, 0.46 * slow * wobble, "ratio:mfu"


# -- the store ------------------------------------------------------------------------------------


@dataclass
class GenStats:
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def count(self, table: str, n: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + n


class PromtoolQueue:
    """Turns finished OpenMetrics block files into TSDB blocks with promtool, one at a time in the
    background (the generator keeps the other CPU)."""

    def __init__(self, promtool: str | None, out_dir: Path) -> None:
        self.promtool = promtool
        self.out_dir = out_dir
        self.pending: list[Path] = []
        self.running: tuple[subprocess.Popen[bytes], Path] | None = None
        self.busy_s = 0.0
        self._t = 0.0
        self.errors: list[str] = []

    def submit(self, path: Path) -> None:
        self.pending.append(path)
        self.poll()

    def poll(self, wait: bool = False) -> None:
        while True:
            if self.running is not None:
                proc, path = self.running
                if wait:
                    proc.wait()
                if proc.poll() is None:
                    return
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.busy_s += time.perf_counter() - self._t
                if proc.returncode:
                    self.errors.append(f"{path.name}: promtool exited {proc.returncode}: {err.strip()[-400:]}")
                else:
                    path.unlink()
                self.running = None
            if not self.pending or self.promtool is None:
                return
            path = self.pending.pop(0)
            self._t = time.perf_counter()
            self.running = (subprocess.Popen(
                [self.promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path), str(self.out_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path)

    def finish(self) -> None:
        while self.pending or self.running is not None:
            self.poll(wait=True)


class Generator:
    """Writes the fleet into a SQLite store at ``db_path`` and OpenMetrics block files."""

    def __init__(self, spec: Spec, db_path: Path, om_dir: Path | None, promtool: str | None,
                 tsdb_dir: Path | None, log: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.fleet = Fleet(spec)
        self.db_path = db_path
        self.om_dir = om_dir
        self.log = log
        self.stats = GenStats()
        self.promtool = PromtoolQueue(promtool, tsdb_dir) if om_dir is not None and tsdb_dir is not None else None
        self._om_block: int | None = None
        self._om_file: Any = None
        s = spec
        f = self.fleet
        # Running counters per GPU / node.
        self.energy = 86400.0 * 30 * 300 + np.arange(s.gpus) * 1e5
        self.nvlink_tx = np.arange(s.gpus) * 2.0**30 + 1e15
        self.nvlink_rx = self.nvlink_tx * 0.98
        self.net_totals = np.zeros((s.nodes, 2, 4))  # node, iface, (rx bytes, tx bytes, rx pkts, tx pkts)
        self.disk_totals = np.zeros((s.nodes, 7))
        self.fs_used = 1.1e12 + np.arange(s.nodes) * 3e9
        self.rng = np.random.default_rng(s.seed + 1)
        self.prefix = [f'{METRIC}{{node="{f.node_names[f.g_node[g]]}",gpu="{f.g_index[g]}",'
                       f'uuid="{gpu_uuid(f.node_names[f.g_node[g]], int(f.g_index[g]))}"}}' for g in range(s.gpus)]
        self.values = [repr(k / 100) for k in range(101)]

    # -- OpenMetrics --------------------------------------------------------------------------

    def _om_write(self, block: int, text: str) -> None:
        assert self.om_dir is not None and self.promtool is not None
        if block != self._om_block:
            self._om_close()
            self._om_block = block
            self._om_file = open(self.om_dir / f"block-{block}.om", "w")  # noqa: SIM115
            self._om_file.write(f"# HELP {METRIC} GPU utilization (0-1) as NVML reports it.\n"
                                f"# TYPE {METRIC} gauge\n")
        self._om_file.write(text)

    def _om_close(self) -> None:
        if self._om_file is not None:
            assert self.promtool is not None
            self._om_file.write("# EOF\n")
            self._om_file.close()
            self.promtool.submit(Path(self._om_file.name))
            self._om_file = None

    # -- main ---------------------------------------------------------------------------------

    def run(self) -> GenStats:
        s, f = self.spec, self.fleet
        t_all = time.perf_counter()
        engine = make_engine(f"sqlite:///{self.db_path}")
        upgrade(engine)
        ids = self._inventory(engine)
        self.gpu_ids = np.array([ids[gpu_uuid(f.node_names[f.g_node[g]], int(f.g_index[g]))][0]
                                 for g in range(s.gpus)], dtype=np.int64)
        self.node_ids = np.array([ids[gpu_uuid(f.node_names[n], 0)][1] for n in range(s.nodes)], dtype=np.int64)
        t = time.perf_counter()
        self._events(engine)
        self.stats.add("nodes, GPUs, events (Writer)", time.perf_counter() - t)
        conn = sqlite3.connect(self.db_path)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-1048576", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        hours = int(round(s.days * 24))
        per_hour = 3600 // s.step
        next_rollup = s.start + 86400
        for h in range(hours):
            k0 = h * per_hour
            self._hour(conn, k0, per_hour)
            hour_end = s.start + (h + 1) * 3600
            if hour_end >= next_rollup or h == hours - 1:
                t = time.perf_counter()
                refresh(engine, now=min(hour_end, s.end))
                self.stats.add("rollups (db.rollups.refresh, daily)", time.perf_counter() - t)
                next_rollup += 86400
                done = (h + 1) / hours
                elapsed = time.perf_counter() - t_all
                self.log(f"  {done:5.0%} of {s.days:g} days written, {elapsed:6.0f} s elapsed, "
                         f"about {elapsed / done - elapsed:5.0f} s to go")
        if self.promtool is not None:
            self._om_close()
        t = time.perf_counter()
        self._bench(engine)
        self._last_seen(conn)
        conn.close()
        self.stats.add("benchmarks, last_seen", time.perf_counter() - t)
        engine.dispose()
        if self.promtool is not None:
            t = time.perf_counter()
            self.promtool.finish()
            self.stats.add("promtool (after the store was written)", time.perf_counter() - t)
            if self.promtool.errors:
                raise RuntimeError("; ".join(self.promtool.errors[:3]))
        self.stats.add("total", time.perf_counter() - t_all)
        return self.stats

    def _inventory(self, engine: Any) -> dict[str, tuple[int, int]]:
        from sqlalchemy import text

        s, f = self.spec, self.fleet
        writer = Writer(engine)
        for n in range(s.nodes):
            name = f.node_names[n]
            mem, limit = MODELS[f.model[n]]
            infos = [GpuInfo(index=i, uuid=gpu_uuid(name, i), model=f.model[n], serial=f"1652{n:04d}{i:05d}",
                             pci_bus_id=f"00000000:{0x18 + 0x11 * i:02X}:00.0", memory_total_bytes=mem,
                             power_limit_default_watts=limit, sm_clock_max_hz=1980e6, mem_clock_max_hz=2619e6,
                             pcie_link_gen_max=5, pcie_link_width_max=16, mig_mode=0,
                             unsupported=["fan_speed_ratio", "retired_pages_dbe", "retired_pages_sbe"])
                     for i in range(s.per_node)]
            node = {"name": name, "cluster": f.cluster[n], "hostname": f"{name}.{f.cluster[n]}.example",
                    "agent_version": "0.1.0", "driver_version": "580.65.06", "cuda_driver_version": 13000,
                    "cpu_count": 224, "memory_total_bytes": 2 * 2**40, "gpu_count": s.per_node,
                    "labels": {"rack": f"r{n // 8:02d}"}}
            writer.write(Batch(batch_id=f"inv-{name}", node=node, ts=s.start, records=infos))
        with engine.connect() as c:
            rows = c.execute(text("SELECT uuid, id, node_id FROM gpus")).all()
        return {u: (gid, nid) for u, gid, nid in rows}

    def _events(self, engine: Any) -> None:
        s, f = self.spec, self.fleet
        writer = Writer(engine)
        node_of = {gpu_uuid(f.node_names[n], i): n for n in range(s.nodes) for i in range(s.per_node)}
        by_node: dict[int, list[Event]] = {}
        for inc in f.incidents:
            for e in inc.events:
                if s.start <= e.ts < s.end:
                    nd = inc.node if e.gpu_uuid is None else node_of[e.gpu_uuid]
                    by_node.setdefault(nd, []).append(e)
        for nd, evs in by_node.items():
            evs.sort(key=lambda e: e.ts)
            node = {"name": f.node_names[nd], "cluster": f.cluster[nd]}
            writer.write(Batch(batch_id=f"events-{nd}", node=node, ts=evs[-1].ts, records=evs))
            self.stats.count("events", len(evs))

    # -- one hour of samples ------------------------------------------------------------------

    def _hour(self, conn: sqlite3.Connection, k0: int, n_t: int) -> None:
        s, f = self.spec, self.fleet
        t0 = time.perf_counter()
        G, N = s.gpus, s.nodes
        k = np.arange(k0, k0 + n_t)
        base_ts = s.start + k * s.step  # (T,)
        ts = base_ts[:, None] + f.offset[f.g_node][None, :]  # (T, G)
        slot = ((k * s.step) // SLOT).astype(np.int64)
        state = f.state[slot]  # (T, G)
        rng = self.rng
        busy, alloc = state == 2, state == 1
        util = np.where(busy, np.clip(f.base[slot] + rng.normal(0, 0.05, (n_t, G)), 0.05, 1.0),
                        np.where(alloc, rng.uniform(0, 0.045, (n_t, G)), 0.0))
        u100 = np.rint(util * 100).astype(np.int64)
        u100 = np.where(busy, np.maximum(u100, 5), np.minimum(u100, 4))
        util = u100 / 100
        hour = (ts / 3600) % 24
        node_peak = f.peak_hour[f.g_node][None, :]
        afternoon = np.abs(((hour - node_peak + 12) % 24) - 12) < 2.5
        thermal = busy & f.hot[f.g_node][None, :] & afternoon & (rng.random((n_t, G)) < 0.7)
        capped = busy & (rng.random((n_t, G)) < np.where(u100 > 95, 0.15, 0.01))
        reasons = np.where(busy | alloc, 0, 0x1) | np.where(thermal, 0x20, 0) | np.where(capped, 0x4, 0)
        reasons |= np.where(thermal & (rng.random((n_t, G)) < 0.2), 0x40, 0)
        temp = np.rint(31 + 42 * util + rng.normal(0, 1.2, (n_t, G)) + np.where(thermal, 11, 0))
        limit = f.power_limit[None, :]
        power = np.minimum(72 + 610 * util * rng.uniform(0.93, 1.04, (n_t, G)), limit)
        power = np.where(capped, limit * rng.uniform(0.97, 1.0, (n_t, G)), power).round(3)
        sm = np.where(busy | alloc, np.where(thermal, 1410e6, np.where(capped, 1755e6, 1980e6)), 345e6)
        mem_used = np.where(busy | alloc, np.rint(f.job_mem[slot] * f.mem_total[None, :] / MIB) * MIB, 512 * MIB)
        mem_free = f.mem_total[None, :] - mem_used - 529 * MIB
        energy = self.energy[None, :] + np.cumsum(power, axis=0) * s.step
        self.energy = energy[-1]
        link = 4.5e10 * util
        nv_tx = self.nvlink_tx[None, :] + np.cumsum(link, axis=0) * s.step
        nv_rx = self.nvlink_rx[None, :] + np.cumsum(link * 0.97, axis=0) * s.step
        self.nvlink_tx, self.nvlink_rx = nv_tx[-1], nv_rx[-1]
        pcie_tx = np.rint(np.where(busy, rng.uniform(1e9, 2.4e10, (n_t, G)), rng.uniform(0, 5e6, (n_t, G))) / 1e3) * 1e3
        pcie_rx = np.rint(np.where(busy, rng.uniform(1e9, 2.4e10, (n_t, G)), rng.uniform(0, 5e6, (n_t, G))) / 1e3) * 1e3
        procs = np.where(busy, np.where(rng.random((n_t, G)) < 0.1, 2, 1), np.where(alloc, 1, 0))
        pending = np.zeros((n_t, G), dtype=bool)
        unc = np.zeros((n_t, G), dtype=np.int64)
        for g, since in f.remap_pending_from.items():
            pending[:, g] = ts[:, g] >= since
            unc[:, g] = np.where(ts[:, g] >= since, 2, 0)
        ecc_c = np.broadcast_to(f.ecc_corrected[None, :], (n_t, G))
        gen = time.perf_counter() - t0

        cols: dict[str, Any] = {
            "gpu_id": np.broadcast_to(self.gpu_ids[None, :], (n_t, G)), "ts": ts,
            "node_id": np.broadcast_to(self.node_ids[f.g_node][None, :], (n_t, G)),
            "status": "ok", "error": None, "utilization_gpu_ratio": util,
            "utilization_memory_ratio": np.rint(util * 55) / 100, "memory_used_bytes": mem_used.astype(np.int64),
            "memory_free_bytes": mem_free.astype(np.int64),
            "memory_total_bytes": np.broadcast_to(f.mem_total[None, :], (n_t, G)).astype(np.int64),
            "temperature_gpu_celsius": temp, "temperature_memory_celsius": temp + 6,
            "power_watts": power, "power_limit_watts": np.broadcast_to(limit, (n_t, G)),
            "energy_joules_total": energy.round(3), "sm_clock_hz": sm, "mem_clock_hz": 2619e6,
            "sm_clock_max_hz": 1980e6, "mem_clock_max_hz": 2619e6, "clock_event_reasons": reasons,
            "performance_state": np.where(busy | alloc, 0, 8), "fan_speed_ratio": None,
            "pcie_tx_bytes_per_second": pcie_tx, "pcie_rx_bytes_per_second": pcie_rx,
            "pcie_replay_total": np.broadcast_to(f.pcie_replay[None, :], (n_t, G)), "pcie_link_gen": 5,
            "pcie_link_gen_max": 5, "pcie_link_width": 16, "pcie_link_width_max": 16, "nvlink_links_active": 18,
            "nvlink_tx_bytes_total": nv_tx.round(), "nvlink_rx_bytes_total": nv_rx.round(), "nvlink_errors_total": 0,
            "ecc_corrected_volatile_total": ecc_c, "ecc_uncorrected_volatile_total": unc,
            "ecc_corrected_aggregate_total": ecc_c + 17, "ecc_uncorrected_aggregate_total": unc,
            "retired_pages_sbe": None, "retired_pages_dbe": None,
            "remapped_rows_correctable": np.broadcast_to((np.arange(G) % 3)[None, :], (n_t, G)),
            "remapped_rows_uncorrectable": (unc > 0).astype(np.int64), "remapped_rows_pending": pending,
            "remapped_rows_failure": False, "process_count": procs, "mig_mode": 0,
        }
        flat = [cols[c].reshape(-1).tolist() if isinstance(cols.get(c), np.ndarray) else repeat(cols.get(c))
                for c in GPU_COLS]
        rows: list[tuple[Any, ...]] = list(zip(*flat))  # ts-major: row t*G + g
        # Incidents: statuses and absent nodes.
        ok = np.ones((n_t, G), dtype=bool)
        present = np.ones((n_t, G), dtype=bool)
        t_lo, t_hi = float(ts.min()), float(ts.max())
        for inc in f.incidents:
            if inc.end <= t_lo or inc.start > t_hi or inc.status == "ok":
                continue
            gs = [inc.gpu] if inc.gpu is not None else list(range(inc.node * s.per_node, (inc.node + 1) * s.per_node))
            for g in gs:
                hit = (ts[:, g] >= inc.start) & (ts[:, g] < inc.end)
                if inc.status == "absent":
                    present[hit, g] = False
                    continue
                ok[hit, g] = False
                for t in np.flatnonzero(hit):
                    r = rows[t * G + g]
                    rows[t * G + g] = (r[0], r[1], r[2], inc.status, inc.error, *([None] * (len(GPU_COLS) - 5)))
        if not present.all():
            keep = present.reshape(-1)
            rows = [r for r, kept in zip(rows, keep, strict=True) if kept]
        conv = time.perf_counter() - t0 - gen
        t1 = time.perf_counter()
        conn.executemany(_insert_sql(SAMPLE_TABLES["gpu"]), rows)
        self.stats.count("gpu_samples", len(rows))
        ins = time.perf_counter() - t1

        t2 = time.perf_counter()
        node_present = present.reshape(n_t, N, s.per_node).all(axis=2)
        self._host_rows(conn, base_ts, util, node_present)
        self._process_rows(conn, ts, procs, mem_used, present & ok)
        host = time.perf_counter() - t2
        conn.commit()

        t3 = time.perf_counter()
        if self.promtool is not None:
            sel = (present & ok).reshape(-1)
            pre, vals = self.prefix, self.values
            g_of = np.tile(np.arange(G), n_t)[sel].tolist()
            u_of = u100.reshape(-1)[sel].tolist()
            t_of = ts.reshape(-1)[sel].astype(np.int64).tolist()
            text = "".join([f"{pre[g]} {vals[u]} {t}\n" for g, u, t in zip(g_of, u_of, t_of, strict=True)])
            self._om_write(int(base_ts[0] // BLOCK), text)
            self.promtool.poll()
        om = time.perf_counter() - t3
        self.stats.add("GPU samples: numpy", gen)
        self.stats.add("GPU samples: tuples", conv)
        self.stats.add("GPU samples: executemany", ins)
        self.stats.add("host, network, disk, fs, heartbeats, processes", host)
        self.stats.add("OpenMetrics text", om)

    def _host_rows(self, conn: sqlite3.Connection, base_ts: np.ndarray, util: np.ndarray,
                   node_present: np.ndarray) -> None:
        s, f = self.spec, self.fleet
        n_t, N = len(base_ts), s.nodes
        ts = base_ts[:, None] + f.offset[None, :]
        load = util.reshape(n_t, N, s.per_node).mean(axis=2)  # (T, N)
        rng = self.rng
        node_ids = np.broadcast_to(self.node_ids[None, :], (n_t, N))
        keep = node_present.reshape(-1)

        def insert(table: str, cols: dict[str, Any], verb: str = "INSERT") -> None:
            tbl = HEARTBEATS if table == "heartbeats" else SAMPLE_TABLES[table]
            names = [c.name for c in tbl.columns]
            flat = [np.asarray(cols[c]).reshape(-1)[keep].tolist() if isinstance(cols[c], np.ndarray)
                    else repeat(cols[c]) for c in names]
            rows = list(zip(*flat))
            conn.executemany(_insert_sql(tbl, verb), rows)
            self.stats.count(tbl.name, len(rows))

        cpu = np.clip(0.04 + 0.35 * load + rng.normal(0, 0.02, (n_t, N)), 0, 1).round(4)
        mem_used = (0.12 + 0.5 * load) * 2 * 2**40
        insert("host", {
            "node_id": node_ids, "ts": ts, "cpu_utilization_ratio": cpu, "cpu_count": 224,
            "load1": (cpu * 224).round(2), "load5": (cpu * 220).round(2), "load15": (cpu * 215).round(2),
            "memory_total_bytes": 2 * 2**40, "memory_available_bytes": (2 * 2**40 - mem_used).astype(np.int64),
            "memory_used_bytes": mem_used.astype(np.int64), "swap_total_bytes": 0, "swap_used_bytes": 0,
            "uptime_seconds": ts - (s.start - 30 * 86400), "boot_time": s.start - 30 * 86400,
            "processes": (900 + 300 * load).astype(np.int64)})
        iface_cols: dict[str, list[Any]] = {}
        for j, (name, kind, speed, scale, mtu) in enumerate((("eth0", "ethernet", 1e11, 2e8, 9000),
                                                             ("ib0", "infiniband", 4e11, 3.2e10, 4096))):
            rx = np.clip(scale * load * rng.uniform(0.8, 1.2, (n_t, N)), 0, speed / 8).round()
            tx = (rx * rng.uniform(0.9, 1.1, (n_t, N))).round()
            tot = self.net_totals[:, j, :]
            rxt = tot[None, :, 0] + np.cumsum(rx, axis=0) * s.step
            txt = tot[None, :, 1] + np.cumsum(tx, axis=0) * s.step
            self.net_totals[:, j, 0], self.net_totals[:, j, 1] = rxt[-1], txt[-1]
            cols = {"node_id": node_ids, "interface": name, "ts": ts, "kind": kind,
                    "rx_bytes_total": rxt.astype(np.int64), "tx_bytes_total": txt.astype(np.int64),
                    "rx_packets_total": (rxt / 4000).astype(np.int64),
                    "tx_packets_total": (txt / 4000).astype(np.int64),
                    "rx_errors_total": 0, "tx_errors_total": 0, "rx_drops_total": 0, "tx_drops_total": 0,
                    "rx_bytes_per_second": rx, "tx_bytes_per_second": tx, "speed_bits_per_second": speed,
                    "up": 1, "carrier_changes_total": 2, "mtu": mtu,
                    "symbol_errors_total": 0 if kind == "infiniband" else None,
                    "link_downed_total": 0 if kind == "infiniband" else None}
            for c, v in cols.items():
                arr = np.broadcast_to(np.asarray(v, dtype=object if v is None or isinstance(v, str) else None),
                                      (n_t, N))
                iface_cols.setdefault(c, []).append(arr)
        stacked = {c: np.stack(v, axis=2) for c, v in iface_cols.items()}  # (T, N, 2): node-major per ts
        keep2 = np.repeat(node_present.reshape(-1), 2)
        names = [c.name for c in SAMPLE_TABLES["interface"].columns]
        flat = [stacked[c].reshape(-1)[keep2].tolist() for c in names]
        rows = list(zip(*flat))
        conn.executemany(_insert_sql(SAMPLE_TABLES["interface"]), rows)
        self.stats.count("interface_samples", len(rows))

        rbps = (2e8 * load * rng.uniform(0.5, 1.5, (n_t, N)) + 1e6).round()
        wbps = (5e7 * load * rng.uniform(0.5, 1.5, (n_t, N)) + 2e5).round()
        rps, wps = (rbps / 131072).round(1), (wbps / 65536).round(1)
        d = self.disk_totals
        tot = [d[:, i][None, :] + np.cumsum(x, axis=0) * s.step for i, x in enumerate(
            (rps, wps, rbps, wbps, rps * 1e-4, wps * 2e-5, np.minimum(1.0, 0.02 + 0.3 * load)))]
        for i, x in enumerate(tot):
            d[:, i] = x[-1]
        insert("disk", {"node_id": node_ids, "device": "nvme0n1", "ts": ts,
                        "reads_total": tot[0].astype(np.int64), "writes_total": tot[1].astype(np.int64),
                        "read_bytes_total": tot[2].astype(np.int64), "write_bytes_total": tot[3].astype(np.int64),
                        "read_seconds_total": tot[4].round(3), "write_seconds_total": tot[5].round(3),
                        "io_seconds_total": tot[6].round(3), "read_bytes_per_second": rbps,
                        "write_bytes_per_second": wbps, "reads_per_second": rps, "writes_per_second": wps,
                        "utilization_ratio": np.minimum(1.0, 0.02 + 0.3 * load).round(4), "queue_depth": 2})
        used = self.fs_used[None, :] + np.cumsum(wbps * 0.01, axis=0) * s.step
        self.fs_used = used[-1]
        size = 3.84e12
        insert("filesystem", {"node_id": node_ids, "path": "/", "ts": ts, "device": "/dev/nvme0n1p2",
                              "fstype": "ext4", "size_bytes": int(size), "free_bytes": (size - used).astype(np.int64),
                              "avail_bytes": (size * 0.95 - used).astype(np.int64),
                              "used_bytes": used.astype(np.int64), "files_total": 244_187_136,
                              "files_free": (244_187_136 - used / 2e5).astype(np.int64)})
        hb = json.dumps({"nvml": {"status": "ok"}, "host": {"status": "ok"}, "network": {"status": "ok"},
                         "storage": {"status": "ok"}})
        insert("heartbeats", {"node_id": node_ids, "ts": ts, "agent_version": "0.1.0", "collectors": hb},
               verb="INSERT OR IGNORE")

    def _process_rows(self, conn: sqlite3.Connection, ts: np.ndarray, procs: np.ndarray, mem_used: np.ndarray,
                      up: np.ndarray) -> None:
        s, f = self.spec, self.fleet
        recent = ts[:, 0] >= s.end - 3600
        if not recent.any():
            return
        rows = []
        for t, g in zip(*np.nonzero(recent[:, None] & up & (procs > 0)), strict=True):
            n = int(procs[t, g])
            for p in range(n):
                rows.append((int(self.gpu_ids[g]), float(ts[t, g]), 4000 + int(f.g_node[g]) * 64 + int(g) * 2 + p,
                             int(self.node_ids[f.g_node[g]]), "python" if p == 0 else "pt_data_worker",
                             int((mem_used[t, g] - 600 * MIB) / n), None))
        conn.executemany(_insert_sql(SAMPLE_TABLES["gpu_process"]), rows)
        self.stats.count("gpu_process_samples", len(rows))

    # -- after the samples --------------------------------------------------------------------

    def _bench(self, engine: Any) -> None:
        from sqlalchemy import insert

        s, f = self.spec, self.fleet
        runs, results = [], []
        for n, (nd, g, workload, started, value, unit_metric) in enumerate(f.bench_runs(), start=1):
            unit, metric = unit_metric.split(":")
            model = f.model[nd]
            env = {"torch": "2.13.0", "driver": "580.65.06", "cuda": "13.0", "gpu_model": model,
                   "hostname": f"{f.node_names[nd]}.{f.cluster[nd]}.example", "nccl": "2.27.3"}
            config = ({"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "iterations": 50} if workload == "gemm"
                      else {"model": "llama-1b", "dtype": "bf16", "seq_len": 2048, "micro_batch": 4})
            runs.append({"id": n, "uid": hashlib.md5(f"run-{n}-{s.seed}".encode()).hexdigest(),
                         "node_id": int(self.node_ids[nd]), "gpu_id": int(self.gpu_ids[g]), "workload": workload,
                         "suite": "quick", "device": "cuda", "status": "ok", "error": None,
                         "started_at": started, "finished_at": started + 90, "config": config, "environment": env})
            samples = [round(value * (1 + (i - 2) / 500), 4) for i in range(5)]
            results.append({"run_id": n, "gpu_id": int(self.gpu_ids[g]), "metric": metric, "unit": unit,
                            "value": value, "median": value, "p90": value * 1.004, "p99": value * 1.008,
                            "iqr": value * 0.004, "cv": 0.003, "count": 5, "samples": samples})
        with engine.begin() as c:
            for i in range(0, len(runs), 2000):
                c.execute(insert(BenchRun), runs[i:i + 2000])
                c.execute(insert(BenchResult), results[i:i + 2000])
        self.stats.count("bench_runs", len(runs))
        self.stats.count("bench_results", len(results))

    def _last_seen(self, conn: sqlite3.Connection) -> None:
        s = self.spec
        conn.execute("UPDATE gpus SET first_seen = ?, last_seen = COALESCE((SELECT ts FROM gpu_samples "
                     "WHERE gpu_samples.gpu_id = gpus.id AND status = 'ok' ORDER BY ts DESC LIMIT 1), ?)",
                     (s.start, s.start))
        conn.execute("UPDATE nodes SET first_seen = ?, last_seen = COALESCE((SELECT MAX(ts) FROM heartbeats "
                     "WHERE heartbeats.node_id = nodes.id), ?)", (s.start, s.start))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# -- the cache folder -----------------------------------------------------------------------------


@dataclass
class Dataset:
    """A generated store (and TSDB blocks) in ``folder``, described by ``manifest.json``."""

    spec: Spec
    folder: Path
    manifest: dict[str, Any]

    @property
    def db_path(self) -> Path:
        return self.folder / "store.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def tsdb(self) -> Path:
        return self.folder / "tsdb"

    def save(self) -> None:
        (self.folder / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")


def disk_free(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def estimated_bytes(spec: Spec) -> float:
    """Store (~330 bytes per GPU sample with indexes, ~200 per node-level row) and OpenMetrics text
    (two 2-hour files at a time, ~140 bytes per sample)."""
    node_rows = spec.timestamps * spec.nodes * 6
    return spec.samples * 330 + node_rows * 200 + spec.gpus * (7200 / spec.step) * 140 * 2


def alerting(ds: Dataset, log: Callable[[str], None] = print) -> None:
    """Bring the store's schema to the current migration and, once per ``ALERTING_VERSION``, let the
    alerting controller evaluate the last half hour of the data, so the Alerts page has content."""
    from sqlalchemy import text

    from db.engine import current_revision, head_revision

    engine = make_engine(ds.url)
    try:
        if current_revision(engine) != head_revision():
            log(f"upgrading the cached store's schema to {head_revision()}")
            upgrade(engine)
        done = ds.manifest.get("alerting") or {}
        if done.get("version") == ALERTING_VERSION:
            return
        t = time.perf_counter()
        try:
            from alerts.config import default_config
            from alerts.controller import Controller
            from alerts.silences import create_silence
        except ImportError as exc:
            ds.manifest["alerting"] = {"version": ALERTING_VERSION, "skipped": f"{type(exc).__name__}: {exc}"}
            ds.save()
            return
        s = ds.spec
        clock = {"now": s.end - CONTROLLER_MINUTES * 60}
        create_silence(engine, [f"node={node_name(min(58, s.nodes - 1))}"], 6 * 3600, "kernel upgrade",
                       "bench", now=clock["now"] - 3600)
        controller = Controller(engine, default_config(), controller_id="bench-pages", clock=lambda: clock["now"])
        cycles = 0
        while clock["now"] <= s.end:
            controller.cycle()
            cycles += 1
            clock["now"] += 60
        counts = {}
        with engine.connect() as c:
            for table in ("alerts", "health_states", "notifications", "delivery_attempts", "silences"):
                counts[table] = int(c.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
        took = time.perf_counter() - t
        log(f"alerting controller: {cycles} cycles in {took:.0f} s: "
            + ", ".join(f"{v} {k}" for k, v in counts.items()))
        ds.manifest["alerting"] = {"version": ALERTING_VERSION, "cycles": cycles, "seconds": round(took, 1),
                                   "rows": counts}
        ds.manifest["store_bytes"] = sum(p.stat().st_size for p in ds.folder.glob("store.db*"))
        ds.save()
    finally:
        engine.dispose()


def dataset(spec: Spec, base: Path, promtool: str | None, log: Callable[[str], None] = print,
            rebuild: bool = False) -> Dataset:
    """The cached dataset for ``spec`` under ``base``, generated first if missing or incomplete."""
    spec.check()
    folder = base / spec.key()
    manifest_path = folder / "manifest.json"
    if manifest_path.exists() and not rebuild:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("complete") and (manifest.get("tsdb") or not promtool):
            log(f"using the cached store {folder} (generated in {manifest['generation_s']['total']:.0f} s "
                f"on {manifest['generated_at']})")
            ds = Dataset(spec, folder, manifest)
            alerting(ds, log)
            return ds
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    need = estimated_bytes(spec)
    free = disk_free(folder)
    if free < need * 1.2:
        raise SystemExit(f"not enough disk under {base}: about {need / 2**30:.1f} GiB needed, "
                         f"{free / 2**30:.1f} GiB free (use --dir)")
    log(f"generating {spec.gpus} GPUs x {spec.days:g} days at {spec.step} s = {spec.samples:,} GPU samples "
        f"into {folder} (about {need / 2**30:.1f} GiB)")
    om_dir = folder / "openmetrics" if promtool else None
    if om_dir is not None:
        om_dir.mkdir()
        (folder / "tsdb").mkdir()
    gen = Generator(spec, folder / "store.db", om_dir, promtool, folder / "tsdb" if promtool else None, log)
    stats = gen.run()
    if om_dir is not None:
        shutil.rmtree(om_dir, ignore_errors=True)
    manifest = {
        "spec": asdict(spec), "generator_version": GENERATOR_VERSION, "complete": True,
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "generation_s": {k: round(v, 1) for k, v in stats.seconds.items()},
        "rows": stats.rows, "store_bytes": sum(p.stat().st_size for p in folder.glob("store.db*")),
        "tsdb": bool(promtool), "tsdb_compacted": False, "python": sys.version.split()[0],
    }
    ds = Dataset(spec, folder, manifest)
    ds.save()
    alerting(ds, log)
    return ds
