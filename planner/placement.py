"""Where a pod or job goes: the placement policies of the FGD paper's comparison (random, dotprod,
gpu_clustering, gpu_packing, best_fit, fgd) plus first_fit, over a live :class:`ClusterState`.

Each policy turns (node state, request) into a cost per node (lower is better; inf = does not fit) and,
for a GPU-sharing request, the free share of the GPU it would take. Costs depend only on the node's own
state, so the :class:`Placer` keeps them per request class and recomputes only nodes that changed since:
placing a pod costs O(changed nodes), and every step is a numpy operation over a node array.

The baselines follow the paper's artifact (hkust-adsl/kubernetes-scheduler-simulator): dotprod takes the
node whose idle (CPU, GPU) vector has the smallest dot product with the demand, both normalized by the
largest node; best_fit the smallest weighted leftover; gpu_packing prefers shared GPUs, then free GPUs
on used nodes, then empty nodes; gpu_clustering prefers nodes already running the same kind of GPU
request; inside a node, random takes a random GPU with room, first_fit the first, fgd the one whose
fragmentation grows least, the others the best-fitting one. Ties between nodes are broken at random
when the Placer has a generator (as the Kubernetes scheduler does), else by the lowest node index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.cluster import MILLI, Cluster, ClusterState, Request, Requests
from planner.fragmentation import (
    Workload,
    class_counts,
    fragmentation_from_counts,
    shifted_counts,
    target_workload,
    whole_gpu_counts,
)

POLICIES = ("random", "dotprod", "gpu_clustering", "gpu_packing", "best_fit", "fgd", "fgd_exact", "first_fit")
PAPER_POLICIES = POLICIES[:6]
INF = float("inf")


@dataclass(frozen=True)
class Placement:
    node: int
    gpus: tuple[int, ...]
    request: Request


@dataclass
class _Scores:
    stamp: np.ndarray
    cost: np.ndarray
    choice: np.ndarray


class Placer:
    """A cluster's live state plus one placement policy. ``workload`` (the FGD target workload) is
    required for ``fgd`` and enables the fragmentation figures for every policy."""

    def __init__(self, cluster: Cluster, policy: str, workload: Workload | None = None,
                 rng: np.random.Generator | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r} (one of {', '.join(POLICIES)})")
        if policy.startswith("fgd") and workload is None:
            raise ValueError(f"the {policy} policy needs a target workload")
        self.cluster, self.policy, self.workload, self.rng = cluster, policy, workload, rng
        self.state = ClusterState(cluster)
        n = cluster.n_nodes
        self.affinity = np.zeros((n, cluster.gpu_slots + 1), dtype=np.int64)  # col 0 sharing, col k: k whole GPUs
        self._version = np.zeros(n, dtype=np.int64)
        self._clock = 0
        self._allocated = 0
        self._cache: dict[int, _Scores] = {}
        self.max_cpu = float(max(1, int(cluster.cpu_milli.max(initial=1))))
        self.max_gpu = float(max(MILLI, int(cluster.gpu_count.max(initial=1)) * MILLI))
        self.frag = np.zeros(n)
        self._stale = np.ones(n, dtype=bool)  # nodes whose F_n (and class counts) are out of date
        if workload is not None:
            self.cnt = np.zeros((n, len(workload)), dtype=np.int64)
            self.part = np.zeros((n, len(workload)), dtype=np.int64)

    # -- reading -------------------------------------------------------------------------------------
    @property
    def fragmentation_milli(self) -> float:
        """Σ_n F_n of the current state (0 without a workload)."""
        return float(self.node_fragmentation().sum())

    def node_fragmentation(self) -> np.ndarray:
        """F_n of every node (milli-GPU), refreshed for the nodes that changed since the last call."""
        stale = np.flatnonzero(self._stale)
        if stale.size and self.workload is not None:
            s, wl = self.state, self.workload
            self.cnt[stale], self.part[stale] = class_counts(s.gpu_left[stale], wl)
            self.frag[stale] = fragmentation_from_counts(s.cpu_left[stale], s.mem_left[stale],
                                                         self.cluster.model_id[stale], s.gpu_left[stale].sum(axis=1),
                                                         self.cnt[stale], self.part[stale], wl)
        self._stale[stale] = False
        return self.frag

    @property
    def allocated_milli(self) -> int:
        return self._allocated

    def node_costs(self, req: Request, cls: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cost[N], choice[N]) of every node for ``req``; ``cls`` names the request's class for reuse."""
        if cls is None:
            return self._costs(req, np.arange(self.cluster.n_nodes))
        entry = self._cache.get(cls)
        if entry is None:
            n = self.cluster.n_nodes
            entry = self._cache[cls] = _Scores(np.full(n, -1, dtype=np.int64), np.empty(n), np.empty(n, np.int64))
        dirty = np.flatnonzero(entry.stamp != self._version)
        if dirty.size:
            entry.cost[dirty], entry.choice[dirty] = self._costs(req, dirty)
            entry.stamp[dirty] = self._version[dirty]
        return entry.cost, entry.choice

    def choose(self, req: Request, cls: int | None = None, exclude: int | None = None) -> Placement | None:
        """Where the policy would put ``req`` now (nothing is allocated); None when it fits nowhere."""
        cost, choice = self.node_costs(req, cls)
        if exclude is not None:
            cost = cost.copy()
            cost[exclude] = INF
        best = cost.min(initial=INF)
        if best == INF:
            return None
        ties = np.flatnonzero(cost == best)
        node = int(ties[self.rng.integers(len(ties))] if self.rng is not None and len(ties) > 1 else ties[0])
        return Placement(node, self._gpus(node, req, int(choice[node])), req)

    def rank(self, req: Request, top: int = 5) -> list[tuple[int, float, tuple[int, ...]]]:
        """The ``top`` best nodes for ``req`` as (node, cost, GPU slots), best first (placement advice)."""
        cost, choice = self.node_costs(req)
        order = np.argsort(cost, kind="stable")[:top]
        return [(int(n), float(cost[n]), self._gpus(int(n), req, int(choice[n]))) for n in order if cost[n] < INF]

    # -- changing ------------------------------------------------------------------------------------
    def place(self, req: Request, cls: int | None = None) -> Placement | None:
        p = self.choose(req, cls)
        if p is not None:
            self.allocate(p)
        return p

    def allocate(self, p: Placement) -> None:
        self.state.take(p.node, p.gpus, p.request)
        self._allocated += len(p.gpus) * p.request.per_gpu_milli
        if p.request.num_gpu:
            self.affinity[p.node, _tag(p.request)] += 1
        self._touch(p.node)

    def release(self, p: Placement) -> None:
        self.state.give(p.node, p.gpus, p.request)
        self._allocated -= len(p.gpus) * p.request.per_gpu_milli
        if p.request.num_gpu:
            self.affinity[p.node, _tag(p.request)] -= 1
        self._touch(p.node)

    def _touch(self, node: int) -> None:
        self._clock += 1
        self._version[node] = self._clock
        self._stale[node] = True

    def _gpus(self, node: int, req: Request, choice: int) -> tuple[int, ...]:
        gl = self.state.gpu_left[node]
        if req.num_gpu == 0:
            return ()
        if not req.shares_gpu:
            return tuple(int(g) for g in np.flatnonzero(gl == MILLI)[: req.num_gpu])
        if self.policy == "random" and self.rng is not None:
            room = np.flatnonzero(gl >= req.gpu_milli)
            return (int(room[self.rng.integers(len(room))]),)
        return (int((gl == choice).argmax()),)

    # -- scoring -------------------------------------------------------------------------------------
    def _costs(self, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cost = np.full(len(idx), INF)
        choice = np.full(len(idx), -1, dtype=np.int64)
        ok = feasible(self.cluster, self.state, idx, req)
        sub = idx[ok]
        if sub.size:
            cost[ok], choice[ok] = _POLICY_COST[self.policy](self, req, sub)
        return cost, choice


def _tag(req: Request) -> int:
    return 0 if req.shares_gpu else req.num_gpu


def feasible(cluster: Cluster, state: ClusterState, idx: np.ndarray, req: Request) -> np.ndarray:
    """Which nodes of ``idx`` can host ``req`` now: CPU, memory, GPU model and GPU room."""
    ok = (state.cpu_left[idx] >= req.cpu_milli) & (state.mem_left[idx] >= req.memory_mib)
    if req.num_gpu == 0:
        return ok
    mid = cluster.model_id[idx]
    ok &= mid >= 0
    if req.allowed is not None:
        ok &= req.allowed[mid]
    gl = state.gpu_left[idx]
    if req.shares_gpu:
        return ok & (gl >= req.gpu_milli).any(axis=1)
    return ok & ((gl == MILLI).sum(axis=1) >= req.num_gpu)


def _best_fit_gpu(gl: np.ndarray, req: Request) -> np.ndarray:
    """Free share of the fullest GPU with room for a sharing request (the paper's GPU selection)."""
    if not req.shares_gpu:
        return np.full(len(gl), -1, dtype=np.int64)
    return np.where(gl >= req.gpu_milli, gl, MILLI + 1).min(axis=1)


def _first_fit(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gl = pl.state.gpu_left[idx]
    choice = np.full(len(idx), -1, dtype=np.int64)
    if req.shares_gpu:
        room = gl >= req.gpu_milli
        choice = gl[np.arange(len(idx)), room.argmax(axis=1)]
    return idx.astype(float), choice


def _random(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(len(idx)), _best_fit_gpu(pl.state.gpu_left[idx], req)


def _best_fit(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pl.state
    gl = s.gpu_left[idx]
    left = (0.5 * (s.cpu_left[idx] - req.cpu_milli) / pl.max_cpu
            + 0.5 * (gl.sum(axis=1) - req.total_gpu_milli) / pl.max_gpu)
    return left, _best_fit_gpu(gl, req)


def _dotprod(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pl.state
    gl = s.gpu_left[idx]
    dot = ((s.cpu_left[idx] / pl.max_cpu) * (req.cpu_milli / pl.max_cpu)
           + (gl.sum(axis=1) / pl.max_gpu) * (req.total_gpu_milli / pl.max_gpu))
    return dot, _best_fit_gpu(gl, req)


def _gpu_packing(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gl = pl.state.gpu_left[idx]
    choice = _best_fit_gpu(gl, req)
    if req.num_gpu == 0:
        return np.zeros(len(idx)), choice
    free = (gl == MILLI).sum(axis=1)
    empty_node = free == pl.cluster.gpu_count[idx]
    if req.shares_gpu:  # a shared GPU first (the less room left the better), then a free GPU of a used node
        used = np.where(choice < MILLI, np.maximum(100 - (choice * 100 // MILLI) // 10, 50), 49)
    else:
        used = np.full(len(idx), max(50 - req.num_gpu, 33))
    score = np.where(empty_node, np.maximum(33 - free, free), used)
    return -score.astype(float), choice


def _gpu_clustering(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gl = pl.state.gpu_left[idx]
    choice = _best_fit_gpu(gl, req)
    if req.num_gpu == 0:
        return np.zeros(len(idx)), choice
    aff = pl.affinity[idx]
    kinds = (aff > 0).sum(axis=1)
    same = aff[:, _tag(req)] > 0
    tier = np.select([same & (kinds == 1), same, kinds == 0], [75, 50, 25], 0)
    fill = (25 * (pl.max_gpu - gl.sum(axis=1))) // pl.max_gpu
    return -(tier + fill).astype(float), choice


def fgd_score(delta_milli: np.ndarray) -> np.ndarray:
    """The artifact's FGD node score: int(100 · sigmoid(-ΔF / 1000)), higher is better. The coarse integer
    score makes near-equal fragmentation increases ties, broken at random; it allocates more than
    ranking by the exact ΔF on every openb trace we ran (docs/VALIDATION.md), so ``fgd`` uses it."""
    return np.floor(100.0 / (1.0 + np.exp(np.clip(delta_milli / 1000.0, -700, 700))))


def _fgd_delta(pl: Placer, req: Request, idx: np.ndarray, quantized: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fragmentation increase ΔF of each node if ``req`` lands there (for a sharing request, on the GPU
    with the best score; the lowest GPU index among equals, as in the artifact), as a cost: -score, or ΔF
    when exact."""
    wl = pl.workload
    assert wl is not None
    frag = pl.node_fragmentation()
    s, model = pl.state, pl.cluster.model_id[idx]
    cpu2, mem2 = s.cpu_left[idx] - req.cpu_milli, s.mem_left[idx] - req.memory_mib
    total = s.gpu_left[idx].sum(axis=1)
    cnt, part, before = pl.cnt[idx], pl.part[idx], frag[idx]
    n = len(idx)

    def cost(after: np.ndarray, before: np.ndarray) -> np.ndarray:
        return -fgd_score(after - before) if quantized else after - before

    if not req.shares_gpu:  # no GPU, or whole GPUs: every candidate GPU is a free one
        cnt2, part2 = whole_gpu_counts(cnt, part, req.num_gpu, wl)
        after = fragmentation_from_counts(cpu2, mem2, model, total - req.total_gpu_milli, cnt2, part2, wl)
        return cost(after, before), np.full(n, -1, dtype=np.int64)
    # one candidate per distinct free share with room (its lowest-index GPU); equal scores: lowest index
    gl = s.gpu_left[idx]
    slots = gl.shape[1]
    earlier = np.tri(slots, slots, -1, dtype=bool)  # earlier[i, j]: GPU j comes before GPU i
    repeat = ((gl[:, :, None] == gl[:, None, :]) & earlier).any(axis=2)
    rows, cols = np.nonzero((gl >= req.gpu_milli) & ~repeat)
    old = gl[rows, cols]
    cnt2, part2 = shifted_counts(cnt[rows], part[rows], old, old - req.gpu_milli, wl)
    after = fragmentation_from_counts(cpu2[rows], mem2[rows], model[rows], total[rows] - req.gpu_milli, cnt2, part2,
                                      wl)
    grid = np.full(gl.shape, INF)
    grid[rows, cols] = cost(after, before[rows])
    best = grid.argmin(axis=1)
    ar = np.arange(n)
    return grid[ar, best], gl[ar, best]


def _fgd(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _fgd_delta(pl, req, idx, quantized=True)


def _fgd_exact(pl: Placer, req: Request, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _fgd_delta(pl, req, idx, quantized=False)


_POLICY_COST: dict[str, Callable[[Placer, Request, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "random": _random, "dotprod": _dotprod, "gpu_clustering": _gpu_clustering, "gpu_packing": _gpu_packing,
    "best_fit": _best_fit, "fgd": _fgd, "fgd_exact": _fgd_exact, "first_fit": _first_fit,
}


# -- the paper's arrival experiment ------------------------------------------------------------------
@dataclass(frozen=True)
class FillCurve:
    """GPU allocation while pods arrive and never leave: after each arrival, the arrived GPU demand and
    the allocated milli-GPU, both in % of the cluster's GPU capacity."""

    arrived_pct: np.ndarray
    alloc_pct: np.ndarray
    failed: int

    def alloc_at(self, arrived_pct: float) -> float:
        """Allocation once arrived demand first reaches ``arrived_pct`` (the last point if it never does)."""
        i = int(np.searchsorted(self.arrived_pct, arrived_pct - 1e-9))
        return float(self.alloc_pct[min(i, len(self.alloc_pct) - 1)])


def sample_arrivals(pods: Requests, capacity_milli: int, target: float, rng: np.random.Generator) -> np.ndarray:
    """Pod indices drawn with replacement until their GPU requests reach ``target`` × capacity."""
    gpu = pods.total_gpu_milli
    if gpu.sum() <= 0:
        raise ValueError("the pod list requests no GPUs")
    goal = target * capacity_milli
    batch = int(1.2 * goal / gpu.mean()) + 64
    drawn = rng.integers(len(pods), size=batch)
    while gpu[drawn].sum() < goal:
        drawn = np.concatenate([drawn, rng.integers(len(pods), size=batch)])
    return drawn[: int(np.searchsorted(np.cumsum(gpu[drawn]), goal)) + 1]


def fill_cluster(cluster: Cluster, pods: Requests, policy: str, seed: int, target: float = 1.3,
                 workload: Workload | None = None) -> FillCurve:
    """One run of the FGD paper's experiment: seeded arrivals until ``target`` × GPU capacity has been
    requested, each pod placed by ``policy`` or failed. The arrival order depends on the seed only, so
    policies see the same pods; FGD's ``workload`` defaults to the pod list's own (popularity ≥ 95%)."""
    rng = np.random.default_rng(seed)
    order = sample_arrivals(pods, cluster.total_gpu_milli, target, rng)
    wl = workload if workload is not None or not policy.startswith("fgd") else target_workload(pods, cluster.models)
    placer = Placer(cluster, policy, wl, rng=np.random.default_rng([seed, 1]))
    cls, first = pods.class_ids()
    masks = pods.allowed_masks(cluster.models)
    reqs = [pods.request(int(i), masks) for i in first]
    alloc = np.empty(len(order))
    failed = 0
    for i, c in enumerate(cls[order].tolist()):
        if placer.place(reqs[c], c) is None:
            failed += 1
        alloc[i] = placer.allocated_milli
    cap = cluster.total_gpu_milli
    return FillCurve(100.0 * np.cumsum(pods.total_gpu_milli[order]) / cap, 100.0 * alloc / cap, failed)
