"""The cluster model the placement policies and the simulator share: nodes as numpy arrays, their
mutable free resources, resource requests (pods or jobs), and the loaders for the openb node and pod
lists and for the small YAML cluster description.

GPU capacity is counted in milli-GPU (1000 = one GPU), as in the openb trace: a request with
``gpu_milli`` < 1000 shares one GPU, ``num_gpu`` > 1 takes whole GPUs of one node."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

MILLI = 1000


class ClusterFileError(ValueError):
    """A cluster description, pod list or job trace that cannot be read; the message is one line."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str | None


@dataclass(frozen=True, eq=False)
class Cluster:
    """Static node inventory. ``model_id`` indexes ``models``; -1 means the node has no GPU."""

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    gpu_count: np.ndarray
    model_id: np.ndarray
    models: tuple[str, ...]

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    @property
    def gpu_slots(self) -> int:
        """Columns of the per-GPU arrays: the most GPUs any node has (at least 1)."""
        return max(1, int(self.gpu_count.max(initial=0)))

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum()) * MILLI

    def model_of(self, node: int) -> str | None:
        mid = int(self.model_id[node])
        return self.models[mid] if mid >= 0 else None

    def specs(self) -> list[NodeSpec]:
        return [NodeSpec(self.names[i], int(self.cpu_milli[i]), int(self.memory_mib[i]), int(self.gpu_count[i]),
                         self.model_of(i)) for i in range(self.n_nodes)]

    def with_nodes(self, template: NodeSpec, count: int) -> Cluster:
        """This cluster plus ``count`` copies of ``template`` (named ``<template.name>-<k>``)."""
        extra = [NodeSpec(f"{template.name}-{k}", template.cpu_milli, template.memory_mib, template.gpus,
                          template.model) for k in range(count)]
        return make_cluster([*self.specs(), *extra])


def make_cluster(nodes: Iterable[NodeSpec]) -> Cluster:
    nodes = list(nodes)
    models = tuple(sorted({n.model for n in nodes if n.model and n.gpus > 0}))
    index = {m: i for i, m in enumerate(models)}
    return Cluster(
        names=tuple(n.name for n in nodes),
        cpu_milli=np.array([n.cpu_milli for n in nodes], dtype=np.int64),
        memory_mib=np.array([n.memory_mib for n in nodes], dtype=np.int64),
        gpu_count=np.array([n.gpus for n in nodes], dtype=np.int64),
        model_id=np.array([index[n.model] if n.model and n.gpus > 0 else -1 for n in nodes], dtype=np.int64),
        models=models,
    )


class ClusterState:
    """Free resources of every node: CPU, memory and each GPU's free milli-GPU (``gpu_left[node, slot]``).

    Slots beyond a node's GPU count hold 0, exactly like a fully used GPU, so the per-GPU arithmetic
    needs no mask."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.cpu_left = cluster.cpu_milli.copy()
        self.mem_left = cluster.memory_mib.copy()
        slots = np.arange(cluster.gpu_slots)
        self.gpu_left = np.where(slots[None, :] < cluster.gpu_count[:, None], MILLI, 0).astype(np.int64)

    def copy(self) -> ClusterState:
        out = ClusterState.__new__(ClusterState)
        out.cluster = self.cluster
        out.cpu_left, out.mem_left, out.gpu_left = self.cpu_left.copy(), self.mem_left.copy(), self.gpu_left.copy()
        return out

    def take(self, node: int, gpus: Sequence[int], req: Request) -> None:
        self.cpu_left[node] -= req.cpu_milli
        self.mem_left[node] -= req.memory_mib
        for g in gpus:
            self.gpu_left[node, g] -= req.per_gpu_milli

    def give(self, node: int, gpus: Sequence[int], req: Request) -> None:
        self.cpu_left[node] += req.cpu_milli
        self.mem_left[node] += req.memory_mib
        for g in gpus:
            self.gpu_left[node, g] += req.per_gpu_milli

    @property
    def allocated_gpu_milli(self) -> int:
        return self.cluster.total_gpu_milli - int(self.gpu_left.sum())


class Request(NamedTuple):
    """One pod or job. ``allowed`` is a bool mask over ``cluster.models`` plus a trailing False column
    (indexed by ``model_id`` -1 for GPU-less nodes); None allows any GPU model."""

    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    allowed: np.ndarray | None = None

    @property
    def shares_gpu(self) -> bool:
        return self.num_gpu == 1 and 0 < self.gpu_milli < MILLI

    @property
    def per_gpu_milli(self) -> int:
        return self.gpu_milli if self.num_gpu else 0

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli


@dataclass(frozen=True, eq=False)
class Requests:
    """A table of requests (a pod list or a job trace's demands), one numpy array per column."""

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    num_gpu: np.ndarray
    gpu_milli: np.ndarray
    gpu_spec: tuple[str, ...]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def total_gpu_milli(self) -> np.ndarray:
        return self.num_gpu * self.gpu_milli

    def allowed_masks(self, models: Sequence[str]) -> np.ndarray:
        """bool[len, len(models)+1]: which GPU models each request accepts (all when its spec is empty)."""
        out = np.zeros((len(self), len(models) + 1), dtype=bool)
        index = {m: i for i, m in enumerate(models)}
        cache: dict[str, np.ndarray] = {}
        for i, spec in enumerate(self.gpu_spec):
            if spec not in cache:
                row = np.zeros(len(models) + 1, dtype=bool)
                if spec:
                    row[[index[m] for m in spec.split("|") if m in index]] = True
                else:
                    row[: len(models)] = True
                cache[spec] = row
            out[i] = cache[spec]
        return out

    def class_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(class id per request, index of one representative per class): requests with equal demands and
        GPU spec share a class, so per-class work (placement scores, popularity) is done once."""
        spec_ids = np.unique(np.array(self.gpu_spec, dtype=object).astype(str), return_inverse=True)[1]
        keys = np.stack([self.cpu_milli, self.memory_mib, self.num_gpu, self.gpu_milli, spec_ids], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), first

    def request(self, i: int, masks: np.ndarray | None = None) -> Request:
        allowed = None if masks is None or not self.gpu_spec[i] else masks[i]
        return Request(int(self.cpu_milli[i]), int(self.memory_mib[i]), int(self.num_gpu[i]),
                       int(self.gpu_milli[i]), allowed)


def make_requests(names: Sequence[str], cpu_milli: Any, memory_mib: Any, num_gpu: Any, gpu_milli: Any,
                  gpu_spec: Sequence[str] | None = None, source: str = "requests",
                  extra: dict[str, np.ndarray] | None = None) -> Requests:
    """Build and check a request table: a sharing request uses one GPU, whole-GPU requests use 1000 each."""
    cols = [np.asarray(c, dtype=np.int64) for c in (cpu_milli, memory_mib, num_gpu, gpu_milli)]
    cpu, mem, ngpu, milli = cols
    if len(cpu) and (min(int(c.min()) for c in cols) < 0):
        raise ClusterFileError(f"{source}: negative resource request")
    whole_ok = (ngpu <= 1) | (milli == MILLI)
    bad = ~whole_ok | ((ngpu >= 1) & ((milli <= 0) | (milli > MILLI))) | ((ngpu == 0) & (milli > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ClusterFileError(f"{source}: {names[i]}: num_gpu={int(ngpu[i])} with gpu_milli={int(milli[i])} "
                               "(sharing requests use one GPU; multi-GPU requests take whole GPUs, gpu_milli 1000)")
    spec = tuple(gpu_spec) if gpu_spec is not None else ("",) * len(cpu)
    return Requests(tuple(names), cpu, mem, ngpu, milli, spec, dict(extra or {}))


def read_csv(path: str | Path, required: Sequence[str]) -> Any:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ClusterFileError(f"{path}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ClusterFileError(f"{path}: not a readable CSV file ({type(exc).__name__})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ClusterFileError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in required:
        if c in ("sn", "name", "model", "gpu_spec", "job_id"):
            continue
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise ClusterFileError(f"{path}: column {c} is not numeric")
    return df


def int_column(df: Any, col: str, path: str | Path, default: int | None = None) -> np.ndarray:
    if col not in df.columns:
        if default is None:
            raise ClusterFileError(f"{path}: missing column {col}")
        return np.full(len(df), default, dtype=np.int64)
    values = df[col].to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(values).any():
        if default is None:
            raise ClusterFileError(f"{path}: empty value in column {col}")
        values = np.where(np.isnan(values), default, values)
    return values.astype(np.int64)


def str_column(df: Any, col: str) -> list[str]:
    if col not in df.columns:
        return [""] * len(df)
    return ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v).strip() for v in df[col]]


def load_openb_nodes(path: str | Path) -> Cluster:
    """openb ``openb_node_list_*.csv``: sn, cpu_milli, memory_mib, gpu, model."""
    df = read_csv(path, ["sn", "cpu_milli", "memory_mib", "gpu"])
    gpus, models = int_column(df, "gpu", path), str_column(df, "model")
    if len(df) == 0:
        raise ClusterFileError(f"{path}: no nodes")
    nodes = [NodeSpec(str(n), int(c), int(m), int(g), mo or None) for n, c, m, g, mo in
             zip(df["sn"], int_column(df, "cpu_milli", path), int_column(df, "memory_mib", path), gpus, models,
                 strict=True)]
    unnamed = [n.name for n in nodes if n.gpus > 0 and not n.model]
    if unnamed:
        raise ClusterFileError(f"{path}: node {unnamed[0]} has GPUs but no model")
    return make_cluster(nodes)


def load_openb_pods(path: str | Path) -> Requests:
    """openb ``openb_pod_list_*.csv``: name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec, times].

    The creation, deletion and scheduled times (seconds from the trace start) go to ``extra`` when present."""
    df = read_csv(path, ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"])
    extra = {c: df[c].to_numpy(dtype=float, na_value=np.nan) for c in
             ("creation_time", "deletion_time", "scheduled_time") if c in df.columns}
    return make_requests([str(n) for n in df["name"]], int_column(df, "cpu_milli", path),
                         int_column(df, "memory_mib", path), int_column(df, "num_gpu", path),
                         int_column(df, "gpu_milli", path), str_column(df, "gpu_spec"), str(path), extra)


@dataclass(frozen=True)
class ClusterDescription:
    """A cluster and the relative speed of each GPU model (job run time is divided by it; default 1)."""

    cluster: Cluster
    speed: dict[str, float] = field(default_factory=dict)


def load_cluster_yaml(path: str | Path) -> ClusterDescription:
    """A small YAML description::

        nodes:
          - {name: h100, count: 4, gpus: 8, model: H100, cpu_milli: 96000, memory_mib: 1048576}
          - {name: cpu, count: 2, gpus: 0, cpu_milli: 64000, memory_mib: 262144}
        speed: {H100: 1.0, A100: 0.5}

    ``count`` defaults to 1, ``cpu_milli`` to 64000 and ``memory_mib`` to 262144 (256 GiB)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ClusterFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ClusterFileError(f"{path}: not a readable YAML file ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise ClusterFileError(f"{path}: expected a mapping with a non-empty 'nodes' list")
    nodes: list[NodeSpec] = []
    for k, entry in enumerate(doc["nodes"]):
        if not isinstance(entry, dict):
            raise ClusterFileError(f"{path}: nodes[{k}] is not a mapping")
        try:
            count, gpus = int(entry.get("count", 1)), int(entry.get("gpus", 0))
            cpu, mem = int(entry.get("cpu_milli", 64000)), int(entry.get("memory_mib", 262144))
        except (TypeError, ValueError):
            raise ClusterFileError(f"{path}: nodes[{k}]: count, gpus, cpu_milli and memory_mib must be integers") \
                from None
        model = entry.get("model")
        if gpus > 0 and not model:
            raise ClusterFileError(f"{path}: nodes[{k}] has GPUs but no model")
        if min(count, gpus, cpu, mem) < 0:
            raise ClusterFileError(f"{path}: nodes[{k}]: negative value")
        name = str(entry.get("name", model or "node"))
        nodes += [NodeSpec(f"{name}-{i}", cpu, mem, gpus, str(model) if model else None) for i in range(count)]
    if not nodes:
        raise ClusterFileError(f"{path}: no nodes")
    speed_doc = doc.get("speed") or {}
    if not isinstance(speed_doc, dict):
        raise ClusterFileError(f"{path}: 'speed' must map GPU models to factors")
    try:
        speed = {str(m): float(f) for m, f in speed_doc.items()}
    except (TypeError, ValueError):
        raise ClusterFileError(f"{path}: speed factors must be numbers") from None
    if any(not f > 0 for f in speed.values()):
        raise ClusterFileError(f"{path}: speed factors must be positive")
    return ClusterDescription(make_cluster(nodes), speed)


def load_cluster(path: str | Path) -> ClusterDescription:
    """An openb node list (``.csv``) or a YAML description (``.yaml``/``.yml``)."""
    if str(path).lower().endswith((".yaml", ".yml")):
        return load_cluster_yaml(path)
    return ClusterDescription(load_openb_nodes(path))
