"""Runs a suite (or chosen workloads) on one device and stores every run with its fingerprint.

Each parameter set of each workload is one run: telemetry is sampled while it runs, the run's
environment (``bench_runs.environment``) holds the fingerprint, the telemetry summary and notes
(a throttled GPU says so), ``bench_runs.config`` holds exactly the parameters (so runs with equal
configs are comparable), and a workload that fails is stored as failed with its error while the
others still run.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import workloads as registry
from agent.workloads.base import SUITES, RunContext, Workload, WorkloadResult
from agent.workloads.fingerprint import fingerprint, gpu_identity
from agent.workloads.telemetry import CpuSource, Sampler, summary, throttle_notes
from db.writer import ensure_gpu, ensure_node

log = logging.getLogger(__name__)

# Seconds each parameter set's timed region may take, per suite: quick must finish the whole suite
# (train and infer included) in under a minute on a 2-core CPU.
BUDGET_S = {"quick": 0.25, "standard": 2.0, "full": 8.0}

Progress = Callable[[int, int, str], None]  # (done, total, what runs next)


class DeviceUnavailable(Exception):
    """``--device cuda`` on a machine where torch sees no CUDA device."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` must be available."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)")
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise DeviceUnavailable(f"--device {device}: torch sees no CUDA device "
                            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")


@dataclass(slots=True)
class RunRecord:
    """One stored run: the workload's result plus when, where and under what conditions."""

    result: WorkloadResult
    started_at: float
    finished_at: float
    environment: dict[str, Any]
    run_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"run_id": self.run_id, "workload": r.workload, "params": r.params, "status": r.status,
                "error": r.error, "notes": r.notes, "started_at": self.started_at, "finished_at": self.finished_at,
                "environment": self.environment,
                "metrics": [{**m.row(), "gpu_index": m.gpu_index} for m in r.metrics]}


def label(workload: str, params: dict[str, Any]) -> str:
    return f"{workload} " + " ".join(f"{k}={v}" for k, v in params.items())


@dataclass
class Runner:
    """Everything a run needs, injected: the store ``engine`` (None: do not store), the telemetry
    ``sources`` (None: NVML on CUDA, psutil on CPU) and the ``nvml`` module (None: pynvml)."""

    suite: str = "quick"
    device: str = "auto"
    workloads: Sequence[str] | None = None
    params: Mapping[str, Sequence[dict[str, Any]]] | None = None  # per workload: these sets instead of the suite's
    engine: Any = None
    node_name: str | None = None
    storage_path: str | None = None
    sources: Sequence[Any] | None = None
    nvml: Any = None
    progress: Progress | None = None
    budget_s: float | None = None
    threads: int | None = None
    seed: int = 0
    telemetry_interval: float = 0.5
    _gpu_ids: dict[int, int] = field(default_factory=dict)  # torch device index -> gpus.id

    def run(self) -> list[RunRecord]:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r} (one of {', '.join(SUITES)})")
        device = resolve_device(self.device)
        chosen = registry.select(list(self.workloads) if self.workloads else None)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        base = fingerprint(device, nvml=self._nvml(device))
        node_id = self._register(device, base) if self.engine is not None else None
        plan = self._plan(chosen, device)
        scratch = Path(tempfile.mkdtemp(prefix="gpufleet-bench-", dir=self.storage_path))
        sampler = Sampler(self._sources(device), interval=self.telemetry_interval)
        ctx = RunContext(device=device, suite=self.suite, scratch_dir=scratch,
                         budget_s=self.budget_s if self.budget_s is not None else BUDGET_S[self.suite],
                         seed=self.seed, threads=self.threads)
        records: list[RunRecord] = []
        try:
            for n, (workload, params) in enumerate(plan):
                if self.progress is not None:
                    self.progress(n, len(plan), label(workload.name if workload else "?", params or {}))
                records.append(self._one(workload, params, ctx, sampler, base, node_id))
                last = n + 1 == len(plan) or plan[n + 1][0] is not workload
                if last and workload is not None and hasattr(workload, "close"):
                    workload.close()
            if self.progress is not None:
                self.progress(len(plan), len(plan), "done")
        finally:
            for source in sampler.sources:
                try:
                    source.close()
                except Exception:
                    log.debug("closing telemetry source failed", exc_info=True)
            shutil.rmtree(scratch, ignore_errors=True)
        return records

    # -- the plan -----------------------------------------------------------------------------

    def _plan(self, chosen: list[Workload], device: str) -> list[tuple[Any, Any]]:
        """(workload, params) pairs; a workload whose ``params`` raises becomes one failed run."""
        plan: list[tuple[Any, Any]] = []
        for w in chosen:
            try:
                sets = (self.params or {}).get(w.name)
                plan.extend((w, dict(p)) for p in (sets if sets is not None else w.params(self.suite, device)))
            except Exception as exc:
                plan.append((w, {"error": f"{type(exc).__name__}: {exc}"}))
        return plan

    def _one(self, workload: Workload, params: dict[str, Any], ctx: RunContext, sampler: Sampler,
             base: dict[str, Any], node_id: int | None) -> RunRecord:
        started = time.time()
        sampler.start()
        if set(params) == {"error"}:  # params() itself failed
            result = WorkloadResult(workload.name, {}, status="failed", error=params["error"])
        else:
            try:
                result = workload.run(ctx, params)
            except Exception as exc:
                log.debug("workload %s failed", workload.name, exc_info=True)
                result = WorkloadResult(workload.name, params, status="failed", error=f"{type(exc).__name__}: {exc}")
        finished = time.time()
        telemetry = summary(sampler.stop())
        result.notes.extend(throttle_notes(telemetry))
        env = {**base, "dtype": result.params.get("dtype", base.get("dtype")), "telemetry": telemetry,
               "notes": list(result.notes)}
        record = RunRecord(result=result, started_at=started, finished_at=finished, environment=env)
        if node_id is not None:
            record.run_id = self._store(record, node_id, ctx.device)
        return record

    # -- telemetry ----------------------------------------------------------------------------

    def _nvml(self, device: str) -> Any:
        if self.nvml is not None or not device.startswith("cuda"):
            return self.nvml
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return None
        return pynvml

    def _sources(self, device: str) -> list[Any]:
        if self.sources is not None:
            return list(self.sources)
        nvml = self._nvml(device)
        if nvml is not None:
            from collectors.nvml import NvmlCollector

            gpu = NvmlCollector(nvml, event_thread=False)
            if gpu.check():
                return [gpu]
            log.warning("NVML is not usable: no GPU telemetry during the benchmarks")
        return [CpuSource()]

    # -- the store ----------------------------------------------------------------------------

    def _register(self, device: str, base: dict[str, Any]) -> int:
        """The node's id and its visible GPUs' ids, creating the rows if this is the first time (as
        the agent's writer does: by node name and by GPU UUID), without a heartbeat: a benchmark is not
        an agent."""
        now = time.time()
        name = self.node_name or os.environ.get("GPUFLEET_NODE_NAME") or socket.gethostname()
        gpus = self._visible_gpus(device)
        with self.engine.begin() as conn:
            info = {"hostname": base.get("host"), "driver_version": base.get("driver"),
                    "cpu_count": base.get("cpu_count")}
            node_id = ensure_node(conn, name, now, {k: v for k, v in info.items() if v is not None})
            for torch_index, ident in gpus.items():
                gpu_info = {"index": ident["gpu_index"], "model": ident.get("gpu_model")}
                self._gpu_ids[torch_index] = ensure_gpu(conn, node_id, ident["gpu_uuid"], now,
                                                        {k: v for k, v in gpu_info.items() if v is not None})
        return node_id

    def _visible_gpus(self, device: str) -> dict[int, dict[str, Any]]:
        """torch device index -> NVML identity (index, UUID, model) of every GPU this process sees."""
        nvml = self._nvml(device)
        if nvml is None or not device.startswith("cuda"):
            return {}
        import torch

        out = {}
        for i in range(torch.cuda.device_count()):
            uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
            ident = gpu_identity(nvml, uuid=str(uuid)) if uuid is not None else {}
            if ident.get("gpu_uuid"):
                out[i] = ident
        return out

    def _store(self, record: RunRecord, node_id: int, device: str) -> int:
        from db.benchstore import save_run

        r = record.result
        torch_index = 0 if device == "cuda" else int(device.split(":")[1]) if device.startswith("cuda:") else None
        per_gpu = any(m.gpu_index is not None for m in r.metrics)
        run_gpu = None if per_gpu or torch_index is None else self._gpu_ids.get(torch_index)
        rows = [{**m.row(), "gpu_id": self._gpu_ids.get(m.gpu_index) if m.gpu_index is not None else run_gpu}
                for m in r.metrics]
        with self.engine.begin() as conn:
            return save_run(conn, node_id=node_id, gpu_id=run_gpu, workload=r.workload, suite=self.suite,
                            device=device, status=r.status, error=r.error, started_at=record.started_at,
                            finished_at=record.finished_at, config=r.params, environment=record.environment,
                            results=rows)


