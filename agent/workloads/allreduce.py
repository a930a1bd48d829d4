"""Collective bandwidth: all_reduce, all_gather and reduce_scatter through ``torch.distributed``.

One process per rank: on one machine the workload starts them itself (gloo over loopback on CPU,
one NCCL rank per GPU on CUDA); under ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set)
this process is one rank of a multi-node group and rank 0 reports for all. Sizes are nccl-tests'
"size": the whole buffer (all_gather: the gathered output; reduce_scatter: the input).

algbw = size / t; busbw = algbw x nccl-tests' factor (all_reduce 2(n-1)/n, all_gather and
reduce_scatter (n-1)/n), the figure to compare with the link's bandwidth whatever the rank count.
Each rank times every iteration; the stored ``time`` is the per-iteration mean over ranks (as
nccl-tests reports by default) and each rank's own samples are kept as ``time_rank<r>``.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent.workloads.base import Metric, RunContext, WorkloadResult
from agent.workloads.harness import measure, rate_metric, summarize, time_metric

OPS = ("all_reduce", "all_gather", "reduce_scatter")
CPU_RANKS = 2
ELEMENT_BYTES = 4  # float32
START_TIMEOUT_S = 180.0


def _pow2(lo: int, hi: int, step: int = 1) -> tuple[int, ...]:
    return tuple(1 << e for e in range(lo, hi + 1, step))


SIZES = {
    "cpu": {"quick": (1 << 12, 1 << 20), "standard": _pow2(10, 24, 2), "full": _pow2(10, 26)},
    "cuda": {"quick": (1 << 20, 1 << 26), "standard": _pow2(12, 30, 2), "full": _pow2(10, 32)},
}


def bus_factor(op: str, ranks: int) -> float:
    """nccl-tests' bus-bandwidth factor (doc/PERFORMANCE.md there): what each rank's link carries
    per byte of algorithm bandwidth."""
    if op == "all_reduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("all_gather", "reduce_scatter"):
        return (ranks - 1) / ranks
    raise ValueError(f"unknown collective {op!r}")


def bandwidths(op: str, nbytes: int, seconds: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in bytes/s for ``nbytes`` moved by ``op`` over ``ranks`` in ``seconds``."""
    algbw = nbytes / seconds
    return algbw, algbw * bus_factor(op, ranks)


def buffer_bytes(nbytes: int, ranks: int) -> int:
    """``nbytes`` rounded down to whole float32 elements per rank (at least one each)."""
    per = max(1, nbytes // (ELEMENT_BYTES * ranks))
    return per * ranks * ELEMENT_BYTES


# -- one rank -----------------------------------------------------------------------------------


def _collective(op: str, nbytes: int, ranks: int, device: str) -> Any:
    import torch
    import torch.distributed as dist

    count = nbytes // ELEMENT_BYTES
    if op == "all_reduce":
        t = torch.ones(count, device=device)
        return lambda: dist.all_reduce(t)
    small, big = torch.ones(count // ranks, device=device), torch.ones(count, device=device)
    if op == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(big, small)
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return lambda: scatter(small, big)


def bench_rank(cmd: dict[str, Any], ranks: int, device: str) -> list[float]:
    """This rank's per-iteration seconds for one collective. Rank 0 picks the iteration count from a
    short probe and broadcasts it: every rank must make the same number of calls."""
    import torch
    import torch.distributed as dist

    fn = _collective(cmd["op"], int(cmd["bytes"]), ranks, device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(int(cmd.get("warmup", 3))):
        fn()
    sync()
    t0 = time.perf_counter()
    probes = 3
    for _ in range(probes):
        fn()
    sync()
    per = max((time.perf_counter() - t0) / probes, 1e-7)
    iters = torch.tensor([min(int(cmd.get("max_iters", 200)), max(int(cmd.get("min_iters", 5)),
                                                                   int(cmd["budget_s"] / per)))],
                         dtype=torch.int64, device=device)
    dist.broadcast(iters, src=0)
    n = int(iters.item())
    return measure(fn, device=device, warmup=0, min_iters=n, max_iters=n, budget_s=math.inf).samples


def _worker(rank: int, ranks: int, kind: str, backend: str, init_file: str) -> None:
    """A rank process (``python -m agent.workloads.allreduce``): join the group, then run the
    parent's commands (JSON lines on stdin) until stdin closes, answering on the original stdout.
    Anything else that writes to stdout lands on stderr instead, so it cannot corrupt the answers."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def say(status: str, value: Any) -> None:
        answers.write(json.dumps([status, value]) + "\n")

    import torch
    import torch.distributed as dist

    try:
        device = "cpu"
        if kind == "cuda":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=ranks,
                                timeout=timedelta(seconds=120))
    except Exception as exc:
        say("error", f"rank {rank}: {type(exc).__name__}: {exc}")
        return
    say("ready", None)
    try:
        for line in sys.stdin:
            try:
                say("ok", bench_rank(json.loads(line), ranks, device))
            except Exception as exc:
                say("error", f"rank {rank}: {type(exc).__name__}: {exc}")
    finally:
        dist.destroy_process_group()


class LocalGroup:
    """Rank processes on this machine, kept between parameter sets (starting a group costs seconds,
    so a size sweep starts one). Plain subprocesses speaking JSON lines: no multiprocessing, so
    nothing re-imports the caller's main module."""

    def __init__(self, ranks: int, kind: str, backend: str) -> None:
        self.ranks = ranks
        self._dir = tempfile.mkdtemp(prefix="gpufleet-dist-")
        self._procs: list[subprocess.Popen[str]] = []
        self._answers: list[queue.SimpleQueue[str | None]] = []
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        init = os.path.join(self._dir, "init")
        for rank in range(ranks):
            log = open(os.path.join(self._dir, f"rank{rank}.log"), "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen([sys.executable, "-m", __name__, str(rank), str(ranks), kind, backend, init],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                    cwd=self._dir)
            log.close()
            answers: queue.SimpleQueue[str | None] = queue.SimpleQueue()
            threading.Thread(target=_pump, args=(proc, answers), daemon=True, name=f"rank{rank}-reader").start()
            self._procs.append(proc)
            self._answers.append(answers)
        try:
            self._gather(START_TIMEOUT_S)
        except Exception:
            self.close()
            raise

    def _gather(self, timeout: float) -> list[Any]:
        out = []
        deadline = time.monotonic() + timeout
        for rank, answers in enumerate(self._answers):
            try:
                line = answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"rank {rank} did not answer within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"rank {rank} exited: {self._log_tail(rank)}")
            status, value = json.loads(line)
            if status == "error":
                raise RuntimeError(value)
            out.append(value)
        return out

    def _log_tail(self, rank: int) -> str:
        try:
            lines = Path(self._dir, f"rank{rank}.log").read_text().strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def run(self, cmd: dict[str, Any], timeout: float) -> list[list[float]]:
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        return self._gather(timeout)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self._procs)

    def close(self) -> None:
        for proc in self._procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs, self._answers = [], []
        shutil.rmtree(self._dir, ignore_errors=True)


def _pump(proc: subprocess.Popen[str], answers: queue.SimpleQueue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        answers.put(line)
    answers.put(None)


def _torchrun() -> tuple[int, int] | None:
    """(rank, world size) when this process was started by torchrun (or any env:// launcher)."""
    env = os.environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return None


class Collectives:
    name = "allreduce"
    description = ("all_reduce, all_gather, reduce_scatter bus bandwidth (nccl-tests busbw) over local "
                   "processes (gloo on CPU, NCCL per GPU) or a torchrun group; compare busbw with the link")

    def __init__(self) -> None:
        self._group: LocalGroup | None = None
        self._key: tuple[int, str] | None = None
        atexit.register(self.close)

    def ranks(self, device: str) -> int:
        launched = _torchrun()
        if launched is not None:
            return launched[1]
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.device_count())
        return CPU_RANKS

    def params(self, suite: str, device: str) -> Sequence[dict[str, Any]]:
        kind = "cuda" if device.startswith("cuda") else "cpu"
        ranks, backend = self.ranks(device), "nccl" if kind == "cuda" else "gloo"
        return [{"op": op, "bytes": buffer_bytes(size, max(ranks, 1)), "ranks": ranks, "backend": backend}
                for op in OPS for size in SIZES[kind][suite]]

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        op, ranks = str(params["op"]), int(params["ranks"])
        if op not in OPS:
            raise ValueError(f"unknown collective {op!r}")
        if ranks < 2:
            return WorkloadResult(self.name, dict(params), status="skipped",
                                  error=f"a collective needs at least 2 ranks, this node has {ranks}")
        nbytes = buffer_bytes(int(params["bytes"]), ranks)
        cmd = {"op": op, "bytes": nbytes, "budget_s": ctx.budget_s}
        kind = "cuda" if ctx.device.startswith("cuda") else "cpu"
        launched = _torchrun()
        if launched is not None:
            per_rank = self._run_launched(cmd, ranks, kind, str(params["backend"]))
            if per_rank is None:
                return WorkloadResult(self.name, dict(params), status="skipped",
                                      error=f"rank {launched[0]} of {ranks}: rank 0 stores the results")
        else:
            per_rank = self._local(ranks, kind, str(params["backend"])).run(cmd, timeout=60 + 10 * ctx.budget_s)
        return WorkloadResult(self.name, dict(params, bytes=nbytes),
                              metrics=self._metrics(op, nbytes, ranks, per_rank,
                                                             cuda=kind == "cuda" and launched is None))

    @staticmethod
    def _metrics(op: str, nbytes: int, ranks: int, per_rank: list[list[float]], *, cuda: bool) -> list[Metric]:
        iters = min(len(s) for s in per_rank)
        mean = summarize([sum(s[i] for s in per_rank) / len(per_rank) for i in range(iters)])
        metrics = [rate_metric(mean, "busbw", "B/s", nbytes * bus_factor(op, ranks)),
                   rate_metric(mean, "algbw", "B/s", nbytes), time_metric(mean)]
        metrics += [time_metric(summarize(s), f"time_rank{r}", gpu_index=r if cuda else None)
                    for r, s in enumerate(per_rank)]
        return metrics

    def _local(self, ranks: int, kind: str, backend: str) -> LocalGroup:
        if self._group is not None and (self._key != (ranks, kind) or not self._group.alive()):
            self.close()
        if self._group is None:
            self._group, self._key = LocalGroup(ranks, kind, backend), (ranks, kind)
        return self._group

    @staticmethod
    def _run_launched(cmd: dict[str, Any], ranks: int, kind: str, backend: str) -> list[list[float]] | None:
        """This process is one rank of a torchrun group: every rank times, rank 0 gathers."""
        import torch
        import torch.distributed as dist

        device = "cpu"
        if kind == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://")
        samples = bench_rank(cmd, ranks, device)
        gathered: list[Any] = [None] * ranks
        dist.all_gather_object(gathered, samples)
        return gathered if dist.get_rank() == 0 else None

    def close(self) -> None:
        """Stop the rank processes (the runner calls this after the last parameter set)."""
        if self._group is not None:
            self._group.close()
        self._group, self._key = None, None


WORKLOAD = Collectives()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
