"""The demo's nightly benchmark history: one real quick run on this machine, scaled per simulated GPU.

``measure_once`` runs the real gemm and train workloads (one small parameter set each, a few seconds
on a CPU) through the shared harness; ``write_history`` stores, for every simulated GPU and night,
those results scaled by the GPU's speed factor in its scenario (0.85 for the slow GPU, lower while
throttled) with a little seeded noise, labelled ``simulated`` in the run's environment. Rates scale
with the factor, times with its inverse; everything else (loss, error sizes) is kept as measured.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from db.benchstore import save_run
from db.stragglers import direction

NOISE = 0.004  # relative standard deviation of a simulated night's result (real runs vary about this much)
_SCALED = ("value", "median", "p90", "p99")
TRAIN_AFTER = 600.0  # seconds after the night's gemm runs that the node's training run starts


@dataclass(frozen=True, slots=True)
class Measured:
    """One real run, as plain data (it crosses to the demo's backfill processes)."""

    workload: str
    params: dict[str, Any]
    metrics: list[dict[str, Any]]  # bench_results columns
    environment: dict[str, Any]
    seconds: float


def measure_once(device: str = "cpu", threads: int = 1) -> list[Measured]:
    """A real quick gemm (fp32, the quick suite's largest size) and a tiny fp32 training run, on
    ``threads`` torch threads (one: these sizes gain nothing from more, and a busy machine's
    oversubscribed threads would slow them tenfold); the gemm's rate is the peak the training run's
    MFU is taken against (``peaks.remember``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(device)
    finally:
        torch.set_num_threads(before)


def _measure(device: str) -> list[Measured]:
    from agent.workloads import get, peaks
    from agent.workloads.base import RunContext
    from agent.workloads.fingerprint import fingerprint

    out = []
    with tempfile.TemporaryDirectory(prefix="gpufleet-demo-bench-") as scratch:
        ctx = RunContext(device=device, suite="quick", scratch_dir=Path(scratch), budget_s=0.25)
        for name in ("gemm", "train"):
            workload = get(name)
            params = max((p for p in workload.params("quick", device) if p.get("dtype") == "fp32"),
                         key=lambda p: int(p.get("m", 0)))
            began = time.perf_counter()
            result = workload.run(ctx, params)
            took = time.perf_counter() - began
            if result.status != "ok":
                continue
            if name == "gemm" and (tflops := result.metric("tflops")) is not None and tflops.value:
                peaks.remember(device, "fp32", tflops.value * 1e12, "the demo's gemm run")
            env = {**fingerprint(device, dtype="fp32"), "notes": list(result.notes)}
            out.append(Measured(name, dict(params), [m.row() for m in result.metrics], env, took))
    return out


def scaled(metrics: Sequence[Mapping[str, Any]], factor: float) -> list[dict[str, Any]]:
    """Result rows as a device ``factor`` times as fast would have measured them."""
    out = []
    for m in metrics:
        way = direction(m["metric"], m["unit"])
        k = factor if way == 1 else 1 / factor if way == -1 else 1.0
        row = {**m, **{c: m[c] * k for c in _SCALED if m.get(c) is not None}}
        if m.get("samples") and way == -1:
            row["samples"] = [s * k for s in m["samples"]]
        out.append(row)
    return out


def noise(*key: object) -> float:
    """A night's seeded noise factor around 1 (the same for the same key in every process)."""
    return random.Random("/".join(map(str, key))).gauss(1.0, NOISE)


def write_history(conn: Connection, measured: Sequence[Measured], *, node: str, node_id: int,
                  gpus: Mapping[int, int], nights: Sequence[float], speed: Callable[[int, float], float],
                  gpu_model: str, driver: str | None, start: float) -> None:
    """Per night (scenario seconds after ``start``), each real result scaled for every GPU ``speed``
    says is present (gemm, per GPU) and for the node (train, at its slowest GPU's pace, as a
    synchronous data-parallel step runs)."""
    for night in nights:
        ts = start + night
        speeds = {index: speed(index, night) for index in sorted(gpus)}
        factors = {index: s * noise(node, index, int(ts)) for index, s in speeds.items() if s > 0}
        if not factors:  # every GPU lost: nothing ran that night
            continue
        for m in measured:
            per_gpu = m.workload != "train"
            targets = [(gpus[i], f) for i, f in factors.items()] if per_gpu else [(None, min(factors.values()))]
            for gpu_id, factor in targets:
                env = {**m.environment, "simulated": True, "simulated_speed_factor": round(factor, 4),
                       "measured_on": m.environment.get("device_model"), "device_model": gpu_model,
                       "gpu_model": gpu_model, "driver": driver}
                at = ts if per_gpu else ts + TRAIN_AFTER
                save_run(conn, node_id=node_id, gpu_id=gpu_id, workload=m.workload, suite="quick",
                         device="simulated", started_at=at, finished_at=at + m.seconds, config=m.params,
                         environment=env, results=scaled(m.metrics, factor))
