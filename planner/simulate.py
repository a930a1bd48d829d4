"""What-if simulation: replay a job trace on a cluster description under a queue policy (FIFO, SJF, EASY
backfilling) and a placement policy, and answer "how many GPUs of model M keep p90 queueing delay under T".

A job runs on one node for ``duration / speed[model]`` seconds (duration is its run time on a GPU of
speed 1, e.g. taken from benchmark results; CPU-only jobs ignore speed). Completions at a time are
processed before arrivals at the same time, then the queue is scheduled:

- fifo: start jobs in arrival order until the first that does not fit;
- sjf: the same in order of (duration, arrival);
- easy: fifo, and when the head job is blocked it gets a reservation on the node where it first fits
  as running jobs end (the shadow time); later jobs in the queue (the first ``backfill_window``) start
  now if they fit and either end by the shadow time or avoid the reserved node, so the head job is
  never delayed.

Jobs that fit on no node of the empty cluster are counted as unplaceable and not queued."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.cluster import (
    MILLI,
    Cluster,
    ClusterFileError,
    ClusterState,
    NodeSpec,
    Requests,
    int_column,
    load_openb_pods,
    make_requests,
    read_csv,
    str_column,
)
from planner.fragmentation import target_workload
from planner.placement import Placement, Placer, feasible

QUEUE_POLICIES = ("fifo", "sjf", "easy")
SERIES_POINTS = 500
FRAG_SAMPLES = 4000  # fragmentation is computed at about this many evenly spaced events, and held between


@dataclass(frozen=True, eq=False)
class JobTrace:
    """Jobs: their demands, submit times (s) and run times (s, on a GPU of speed 1)."""

    requests: Requests
    submit: np.ndarray
    duration: np.ndarray

    def __len__(self) -> int:
        return len(self.requests)


def trace_from_openb(pods: Requests, source: str = "pod list") -> JobTrace:
    """An openb pod list as a trace: submitted at creation, running until deletion (from the scheduled
    time when the pod was scheduled, else from creation)."""
    if "creation_time" not in pods.extra or "deletion_time" not in pods.extra:
        raise ClusterFileError(f"{source}: no creation_time/deletion_time columns, so it is not a job trace")
    created, deleted = pods.extra["creation_time"], pods.extra["deletion_time"]
    started = pods.extra.get("scheduled_time", np.full(len(pods), np.nan))
    started = np.where(np.isnan(started), created, started)
    if np.isnan(created).any() or np.isnan(deleted).any():
        raise ClusterFileError(f"{source}: empty creation_time or deletion_time")
    return JobTrace(pods, created.astype(float), np.maximum(deleted - started, 0.0))


def load_job_csv(path: str | Path) -> JobTrace:
    """The documented CSV job format: ``job_id,submit_time,duration,num_gpu`` and optionally ``gpu_milli``
    (default 1000 per GPU), ``cpu_milli``, ``memory_mib`` (default 0: not limiting) and ``gpu_spec``
    (allowed models separated by ``|``; empty = any). Times and durations in seconds."""
    df = read_csv(path, ["job_id", "submit_time", "duration", "num_gpu"])
    ngpu = int_column(df, "num_gpu", path)
    milli = int_column(df, "gpu_milli", path, default=MILLI)
    milli = np.where(ngpu == 0, 0, milli)
    submit = df["submit_time"].to_numpy(dtype=float, na_value=np.nan)
    duration = df["duration"].to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(submit).any() or np.isnan(duration).any() or (duration < 0).any():
        raise ClusterFileError(f"{path}: submit_time and duration must be numbers, duration >= 0")
    reqs = make_requests([str(j) for j in df["job_id"]], int_column(df, "cpu_milli", path, 0),
                         int_column(df, "memory_mib", path, 0), ngpu, milli, str_column(df, "gpu_spec"), str(path))
    return JobTrace(reqs, submit, duration)


def load_trace(path: str | Path) -> JobTrace:
    """A job CSV (``submit_time``, ``duration`` columns) or an openb pod list with its times."""
    import pandas as pd

    try:
        head = pd.read_csv(path, nrows=0).columns
    except FileNotFoundError:
        raise ClusterFileError(f"{path}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ClusterFileError(f"{path}: not a readable CSV file ({type(exc).__name__})") from None
    if "submit_time" in head:
        return load_job_csv(path)
    if "gpu_milli" in head and "name" in head:
        return trace_from_openb(load_openb_pods(path), str(path))
    raise ClusterFileError(f"{path}: neither a job CSV (job_id,submit_time,duration,num_gpu,...) "
                           "nor an openb pod list")


def synthetic_trace(n_jobs: int, runtimes: np.ndarray, demands: Requests, cluster: Cluster, load: float = 0.9,
                    seed: int = 0) -> JobTrace:
    """``n_jobs`` jobs with demands drawn from ``demands``, run times from ``runtimes`` (s, > 0 kept) and
    Poisson arrivals at the rate that offers ``load`` × the cluster's GPU capacity."""
    rng = np.random.default_rng(seed)
    runtimes = runtimes[runtimes > 0]
    pick = rng.integers(len(demands), size=n_jobs)
    dur = rng.choice(runtimes, size=n_jobs).astype(float)
    gpu_seconds = float((demands.total_gpu_milli[pick] * dur).sum()) / n_jobs
    rate = load * cluster.total_gpu_milli / gpu_seconds
    submit = np.cumsum(rng.exponential(1.0 / rate, size=n_jobs))
    reqs = make_requests([f"job-{i}" for i in range(n_jobs)], demands.cpu_milli[pick], demands.memory_mib[pick],
                         demands.num_gpu[pick], demands.gpu_milli[pick], [demands.gpu_spec[i] for i in pick])
    return JobTrace(reqs, submit, dur)


@dataclass(frozen=True, eq=False)
class SimResult:
    """Per-job start/end/node (NaN/-1 for unplaceable jobs) and the cluster over time."""

    submit: np.ndarray
    start: np.ndarray
    end: np.ndarray
    node: np.ndarray
    times: np.ndarray
    alloc_ratio: np.ndarray
    frag_ratio: np.ndarray
    queued: np.ndarray
    unplaceable: int
    queue: str
    placement: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def queue_delay(self) -> np.ndarray:
        return (self.start - self.submit)[self.node >= 0]

    @property
    def jct(self) -> np.ndarray:
        return (self.end - self.submit)[self.node >= 0]

    def summary(self) -> dict[str, Any]:
        qd, jct = self.queue_delay, self.jct

        def pct(x: np.ndarray, q: float) -> float | None:
            return float(np.percentile(x, q)) if len(x) else None

        return {
            "queue": self.queue, "placement": self.placement, "jobs": len(self.submit),
            "completed": int((self.node >= 0).sum()), "unplaceable": self.unplaceable,
            "queue_delay_p50_s": pct(qd, 50), "queue_delay_p90_s": pct(qd, 90), "queue_delay_p99_s": pct(qd, 99),
            "queue_delay_mean_s": float(qd.mean()) if len(qd) else None,
            "jct_mean_s": float(jct.mean()) if len(jct) else None, "jct_p50_s": pct(jct, 50),
            "jct_p90_s": pct(jct, 90),
            "makespan_s": float(np.nanmax(self.end) - self.submit.min()) if len(qd) else None,
            "mean_allocation_ratio": self._window_mean(self.alloc_ratio),
            "mean_fragmentation_ratio": self._window_mean(self.frag_ratio),
        }

    def series(self, points: int = SERIES_POINTS) -> dict[str, list[float]]:
        """The time series thinned to at most ``points`` samples (for tables, JSON and charts)."""
        keep = np.unique(np.linspace(0, len(self.times) - 1, min(points, len(self.times))).astype(int))
        return {"time_s": self.times[keep].tolist(), "allocation_ratio": self.alloc_ratio[keep].tolist(),
                "fragmentation_ratio": self.frag_ratio[keep].tolist(), "queued": self.queued[keep].tolist()}

    def _window_mean(self, v: np.ndarray) -> float | None:
        """Time-weighted mean while jobs arrive (first to last submit): the drain after the last arrival,
        often one long job, would otherwise dominate."""
        t = self.times
        if not len(t):
            return None
        end = float(self.submit.max())
        if end <= t[0]:
            return float(v[0])
        edges = np.minimum(np.append(t, end), end)
        return float((v * np.diff(edges)).sum() / (end - t[0]))


class _Sim:
    def __init__(self, cluster: Cluster, trace: JobTrace, queue: str, placement: str, speed: dict[str, float],
                 seed: int, backfill_window: int) -> None:
        if queue not in QUEUE_POLICIES:
            raise ValueError(f"unknown queue policy {queue!r} (one of {', '.join(QUEUE_POLICIES)})")
        self.cluster, self.trace, self.queue_policy, self.window = cluster, trace, queue, backfill_window
        reqs = trace.requests
        self.cls, first = reqs.class_ids()
        masks = reqs.allowed_masks(cluster.models)
        self.class_req = [reqs.request(int(i), masks) for i in first]
        workload = target_workload(reqs, cluster.models)
        self.placer = Placer(cluster, placement, workload, rng=np.random.default_rng(seed))
        empty = ClusterState(cluster)
        every = np.arange(cluster.n_nodes)
        self.placeable = np.array([feasible(cluster, empty, every, r).any() for r in self.class_req])
        node_speed = np.array([speed.get(m, 1.0) for m in cluster.models] + [1.0])
        self.speed = node_speed[cluster.model_id]
        n = len(trace)
        self.start, self.end = np.full(n, np.nan), np.full(n, np.nan)
        self.node = np.full(n, -1, dtype=np.int64)
        self.running: list[tuple[float, int]] = []  # (end, job) heap
        self.placements: dict[int, Placement] = {}
        self.fifo: deque[int] = deque()
        self.sjf: list[tuple[float, float, int]] = []

    # -- queue ---------------------------------------------------------------------------------------
    def enqueue(self, j: int) -> None:
        if self.queue_policy == "sjf":
            heapq.heappush(self.sjf, (float(self.trace.duration[j]), float(self.trace.submit[j]), j))
        else:
            self.fifo.append(j)

    def queued(self) -> int:
        return len(self.sjf) + len(self.fifo)

    def head(self) -> int | None:
        if self.queue_policy == "sjf":
            return self.sjf[0][2] if self.sjf else None
        return self.fifo[0] if self.fifo else None

    def pop_head(self) -> None:
        if self.queue_policy == "sjf":
            heapq.heappop(self.sjf)
        else:
            self.fifo.popleft()

    # -- jobs ----------------------------------------------------------------------------------------
    def runtime(self, j: int, node: int) -> float:
        d = float(self.trace.duration[j])
        return d / float(self.speed[node]) if self.trace.requests.num_gpu[j] else d

    def choose(self, j: int, exclude: int | None = None) -> Placement | None:
        c = int(self.cls[j])
        return self.placer.choose(self.class_req[c], c, exclude)

    def begin(self, j: int, p: Placement, now: float, end: float | None = None) -> None:
        self.placer.allocate(p)
        self.placements[j] = p
        self.start[j], self.node[j] = now, p.node
        self.end[j] = now + self.runtime(j, p.node) if end is None else end
        heapq.heappush(self.running, (float(self.end[j]), j))

    def finish_until(self, t: float) -> None:
        while self.running and self.running[0][0] <= t:
            _, j = heapq.heappop(self.running)
            self.placer.release(self.placements.pop(j))

    # -- scheduling ----------------------------------------------------------------------------------
    def schedule(self, now: float) -> None:
        while (j := self.head()) is not None:
            p = self.choose(j)
            if p is None:
                break
            self.pop_head()
            self.begin(j, p, now)
        if self.queue_policy == "easy" and len(self.fifo) > 1:
            self.backfill(now)

    def backfill(self, now: float) -> None:
        shadow, reserved = self.reservation(self.fifo[0])
        started = set()
        for j in itertools.islice(self.fifo, 1, self.window + 1):
            p = self.choose(j)
            if p is None:
                continue
            end = now + self.runtime(j, p.node)
            if end > shadow and p.node == reserved:
                p = self.choose(j, exclude=reserved)
                if p is None:
                    continue
                end = now + self.runtime(j, p.node)
            self.begin(j, p, now, end)
            started.add(j)
        if started:
            self.fifo = deque(j for j in self.fifo if j not in started)

    def reservation(self, j: int) -> tuple[float, int]:
        """(shadow time, node): when and where job ``j`` first fits as running jobs end in order."""
        req = self.class_req[int(self.cls[j])]
        s = self.placer.state
        nodes: dict[int, ClusterState] = {}
        for end, k in sorted(self.running):
            p = self.placements[k]
            local = nodes.get(p.node)
            if local is None:
                local = nodes[p.node] = _node_state(s, p.node)
            local.give(0, p.gpus, p.request)
            if feasible(local.cluster, local, np.zeros(1, np.int64), req)[0]:
                return end, p.node
        return math.inf, -1

    def run(self) -> SimResult:
        tr = self.trace
        order = np.argsort(tr.submit, kind="stable")
        arrivals = [int(j) for j in order if self.placeable[self.cls[j]]]
        unplaceable = len(order) - len(arrivals)
        submit = tr.submit
        times: list[float] = []
        alloc: list[int] = []
        frag: list[float] = []
        queued: list[int] = []
        every = max(1, 2 * len(arrivals) // FRAG_SAMPLES)  # two events per job
        ai, n, k = 0, len(arrivals), 0
        while ai < n or self.running:
            t_arr = float(submit[arrivals[ai]]) if ai < n else math.inf
            t = min(t_arr, self.running[0][0]) if self.running else t_arr
            self.finish_until(t)
            while ai < n and submit[arrivals[ai]] <= t:
                self.enqueue(arrivals[ai])
                ai += 1
            self.schedule(t)
            times.append(t)
            alloc.append(self.placer.allocated_milli)
            frag.append(self.placer.fragmentation_milli if k % every == 0 else frag[-1])
            queued.append(self.queued())
            k += 1
        cap = max(self.cluster.total_gpu_milli, 1)
        return SimResult(submit.astype(float), self.start, self.end, self.node, np.array(times),
                         np.array(alloc, dtype=float) / cap, np.array(frag) / cap, np.array(queued),
                         unplaceable, self.queue_policy, self.placer.policy)


def _node_state(s: ClusterState, node: int) -> ClusterState:
    """A one-node copy of ``node``'s free resources (for the reservation's what-if)."""
    c, sl = s.cluster, slice(node, node + 1)
    out = ClusterState(Cluster((c.names[node],), c.cpu_milli[sl], c.memory_mib[sl], c.gpu_count[sl], c.model_id[sl],
                               c.models))
    out.cpu_left[0], out.mem_left[0] = s.cpu_left[node], s.mem_left[node]
    out.gpu_left = s.gpu_left[node:node + 1].copy()
    return out


def simulate(cluster: Cluster, trace: JobTrace, queue: str = "fifo", placement: str = "fgd",
             speed: dict[str, float] | None = None, seed: int = 0, backfill_window: int = 256) -> SimResult:
    """Run ``trace`` on ``cluster``; ``placement`` is any of :data:`planner.placement.POLICIES`."""
    return _Sim(cluster, trace, queue, placement, dict(speed or {}), seed, backfill_window).run()


@dataclass(frozen=True)
class CapacityResult:
    """The fewest added nodes of ``template`` that keep p90 queueing delay ≤ the target (None: not within
    ``max_added``), and every simulation the search ran (added nodes → p90 delay, s)."""

    template: NodeSpec
    target_p90_s: float
    added_nodes: int | None
    evaluations: dict[int, float]

    @property
    def added_gpus(self) -> int | None:
        return None if self.added_nodes is None else self.added_nodes * self.template.gpus


def node_template(cluster: Cluster, model: str, gpus: int | None = None) -> NodeSpec:
    """A node like the cluster's first node of ``model`` (or, for a new model, 8 GPUs, 64 cores, 256 GiB)."""
    for spec in cluster.specs():
        if spec.model == model:
            return NodeSpec(f"added-{model}", spec.cpu_milli, spec.memory_mib, gpus or spec.gpus, model)
    return NodeSpec(f"added-{model}", 64000, 262144, gpus or 8, model)


def capacity_search(cluster: Cluster, trace: JobTrace, template: NodeSpec, target_p90_s: float,
                    max_added: int = 1024, run: Callable[[Cluster], SimResult] | None = None,
                    **sim_kwargs: Any) -> CapacityResult:
    """Bisection over the number of added ``template`` nodes (doubling to bracket first); assumes the p90
    delay does not grow when nodes are added."""
    runner = run or (lambda c: simulate(c, trace, **sim_kwargs))
    evals: dict[int, float] = {}

    def ok(k: int) -> bool:
        p90 = runner(cluster.with_nodes(template, k) if k else cluster).summary()["queue_delay_p90_s"]
        evals[k] = math.inf if p90 is None else p90
        return evals[k] <= target_p90_s

    if ok(0):
        return CapacityResult(template, target_p90_s, 0, evals)
    lo, hi = 0, 1
    while not ok(hi):
        if hi >= max_added:
            return CapacityResult(template, target_p90_s, None, evals)
        lo, hi = hi, min(2 * hi, max_added)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return CapacityResult(template, target_p90_s, hi, evals)
