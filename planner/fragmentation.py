"""GPU fragmentation as defined by Weng et al., "Beware of Fragmentation" (USENIX ATC'23).

A target workload is a set of task classes m with popularity p_m. A node's fragmentation measured by
class m, F_n(m), is the node's idle GPU capacity (milli-GPU) that a task of class m cannot use:

- all of it when the task needs no GPU, when the node's GPU model is not allowed, when the node lacks
  the CPU or memory the task needs, or when it lacks enough GPUs with room for the task;
- otherwise the idle capacity of the GPUs whose free share is below the task's per-GPU request
  (a multi-GPU task needs whole GPUs, so every partially used GPU counts).

F_n = Σ_m p_m F_n(m). Everything here is vectorized over nodes (or candidate node states) and classes.

The counts per class are the seam that keeps placement cheap: ``cnt[n, m]`` (GPUs of node n with room
for class m) and ``part[n, m]`` (idle milli-GPU on GPUs too small for m) change only on the node that
changes, and a tentative placement only shifts them by the few GPUs it touches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.cluster import Requests


@dataclass(frozen=True, eq=False)
class Workload:
    """Task classes (arrays of length M) and their popularity (sums to 1)."""

    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    num_gpu: np.ndarray
    gpu_milli: np.ndarray
    allowed: np.ndarray  # bool[M, n_models + 1]: GPU models whose idle GPUs the class can use (none for
    popularity: np.ndarray  # CPU-only classes; the last column, GPU-less nodes, is False)

    def __len__(self) -> int:
        return len(self.popularity)


def target_workload(requests: Requests, models: Sequence[str], threshold: float = 0.95) -> Workload:
    """The most popular request classes of ``requests`` that together cover ``threshold`` of all requests,
    popularity renormalized over them (the FGD artifact's typical-pods rule, popularity threshold 95%).
    ``threshold=1`` keeps every class."""
    if len(requests) == 0:
        raise ValueError("an empty request list has no target workload")
    cls, first = requests.class_ids()
    counts = np.bincount(cls, minlength=len(first)).astype(float)
    order = np.lexsort((first, -counts))  # most popular first; ties in order of first appearance
    share = np.cumsum(counts[order]) / counts.sum()
    keep = order[: int(np.searchsorted(share, min(threshold, 1.0) - 1e-12)) + 1]
    rep = first[keep]
    p = counts[keep] / counts[keep].sum()
    milli = requests.gpu_milli[rep].copy()
    allowed = requests.allowed_masks(models)[rep] & (milli > 0)[:, None]
    return Workload(requests.cpu_milli[rep].copy(), requests.memory_mib[rep].copy(), requests.num_gpu[rep].copy(),
                    milli, allowed, p)


def class_counts(gpu_left: np.ndarray, wl: Workload) -> tuple[np.ndarray, np.ndarray]:
    """(cnt, part), each [N, M]: GPUs with room for each class's per-GPU request, and the idle milli-GPU of
    the GPUs without room."""
    d = wl.gpu_milli[None, None, :]
    g = gpu_left[:, :, None]
    room = g >= d
    return room.sum(axis=1), np.where(room, 0, g).sum(axis=1)


def fragmentation_from_counts(cpu_left: np.ndarray, mem_left: np.ndarray, model_id: np.ndarray, total: np.ndarray,
                              cnt: np.ndarray, part: np.ndarray, wl: Workload) -> np.ndarray:
    """F for C node states given their free CPU, memory, model, total idle milli-GPU and per-class counts."""
    fits = wl.allowed[:, model_id].T  # a fresh array
    fits &= cpu_left[:, None] >= wl.cpu_milli
    fits &= mem_left[:, None] >= wl.memory_mib
    fits &= cnt >= wl.num_gpu
    unusable = np.where(fits, part, total[:, None])
    return unusable @ wl.popularity


def node_fragmentation(cpu_left: np.ndarray, mem_left: np.ndarray, gpu_left: np.ndarray, model_id: np.ndarray,
                       wl: Workload) -> np.ndarray:
    """F_n (milli-GPU) of every node state: free CPU[N], memory[N], per-GPU free milli-GPU [N, G], model[N]."""
    cnt, part = class_counts(gpu_left, wl)
    return fragmentation_from_counts(cpu_left, mem_left, model_id, gpu_left.sum(axis=1), cnt, part, wl)


def shifted_counts(cnt: np.ndarray, part: np.ndarray, old: np.ndarray, new: np.ndarray,
                   wl: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Counts after one GPU of each of C states goes from ``old`` to ``new`` free milli-GPU (vectors)."""
    d = wl.gpu_milli
    room_old, room_new = old[:, None] >= d, new[:, None] >= d
    cnt2 = cnt - room_old + room_new
    part2 = part - np.where(room_old, 0, old[:, None]) + np.where(room_new, 0, new[:, None])
    return cnt2, part2


def whole_gpu_counts(cnt: np.ndarray, part: np.ndarray, k: int, wl: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Counts after ``k`` free GPUs are taken whole: every class with a GPU request loses k GPUs with room,
    and no new partial GPU appears."""
    return cnt - k * (wl.gpu_milli > 0), part
