"""Memory bandwidth: device copy (2·bytes/t: one read, one write), STREAM triad ``a = b + s·c``
(3·bytes/t: two reads, one write) and, on CUDA, pinned host<->device copies (bytes/t).

Compare copy and triad with the memory's datasheet bandwidth (HBM on a GPU, DRAM channels on a CPU);
expect 80-90% of it. Host<->device is bound by the PCIe or C2C link, not by memory. Buffers are
sized well past the last-level cache so the caches do not flatter the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.workloads.base import RunContext, WorkloadResult
from agent.workloads.harness import auto_inner, measure, rate_metric, time_metric

MiB = 1 << 20
SIZES = {
    "cpu": {"quick": (64 * MiB,), "standard": (64 * MiB, 256 * MiB), "full": (64 * MiB, 256 * MiB, 1024 * MiB)},
    "cuda": {"quick": (256 * MiB,), "standard": (256 * MiB, 1024 * MiB),
             "full": (256 * MiB, 1024 * MiB, 4096 * MiB)},
}
# Bytes moved per byte of buffer: copy reads and writes it; triad reads two and writes one.
TRAFFIC = {"copy": 2, "triad": 3, "h2d": 1, "d2h": 1}


def bytes_moved(op: str, nbytes: int) -> int:
    return TRAFFIC[op] * nbytes


class MemoryBandwidth:
    name = "membw"
    description = ("memory bandwidth in bytes/s: device copy (2·bytes/t), triad a=b+s·c (3·bytes/t), "
                   "pinned host<->device on CUDA; compare with the memory's datasheet bandwidth")

    def params(self, suite: str, device: str) -> Sequence[dict[str, Any]]:
        cuda = device.startswith("cuda")
        ops = ("copy", "triad", "h2d", "d2h") if cuda else ("copy", "triad")
        return [{"op": op, "bytes": size} for size in SIZES["cuda" if cuda else "cpu"][suite] for op in ops]

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        import torch

        op, nbytes = str(params["op"]), int(params["bytes"])
        count = nbytes // 4  # float32 elements
        dev = ctx.device
        step: Any
        if op in ("copy", "triad"):
            a = torch.empty(count, device=dev, dtype=torch.float32)
            b = torch.ones(count, device=dev, dtype=torch.float32)
            c = torch.full((count,), 2.0, device=dev, dtype=torch.float32)
            if op == "copy":
                def step() -> None:
                    a.copy_(b)
            else:
                def step() -> None:
                    torch.add(b, c, alpha=3.0, out=a)
        elif op in ("h2d", "d2h"):
            if not dev.startswith("cuda"):
                return WorkloadResult(self.name, dict(params), status="skipped", error="host<->device needs CUDA")
            host = torch.ones(count, dtype=torch.float32).pin_memory()
            gpu = torch.empty(count, device=dev, dtype=torch.float32)
            src, dst = (host, gpu) if op == "h2d" else (gpu, host)

            def step() -> None:
                dst.copy_(src, non_blocking=True)
        else:
            raise ValueError(f"unknown membw op {op!r}")
        inner = auto_inner(step, device=dev)
        stats = measure(step, device=dev, budget_s=ctx.budget_s, inner=inner)
        moved = bytes_moved(op, count * 4)
        return WorkloadResult(self.name, dict(params), metrics=[rate_metric(stats, "bandwidth", "B/s", moved),
                                                                time_metric(stats)])


WORKLOAD = MemoryBandwidth()
