"""Dense matrix multiply throughput: TFLOP/s = 2·M·N·K / t per data type over a size sweep.

The number to compare with a datasheet's dense peak (not the sparse one). Small sizes are bound by
launch and memory, so the curve rising with size and flattening is normal; the flat part is what
the card (or the CPU's cores) can really do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.workloads import dtypes
from agent.workloads.base import RunContext, WorkloadResult
from agent.workloads.harness import auto_inner, measure, rate_metric, time_metric

# Square sizes per suite: CPUs reach their plateau far earlier than GPUs.
SIZES = {
    "cpu": {"quick": (256, 512), "standard": (256, 512, 1024, 2048), "full": (256, 512, 1024, 2048, 4096)},
    "cuda": {"quick": (2048, 8192), "standard": (1024, 2048, 4096, 8192),
             "full": (1024, 2048, 4096, 8192, 16384)},
}


def flops(m: int, n: int, k: int) -> float:
    """Floating-point operations of one (M x K) @ (K x N) product: a multiply and an add per term."""
    return 2.0 * m * n * k


class Gemm:
    name = "gemm"
    description = ("matrix multiply TFLOP/s (2·M·N·K/t) per dtype over square sizes; compare the largest "
                   "size with the dense datasheet peak")

    def params(self, suite: str, device: str) -> Sequence[dict[str, Any]]:
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return [{"dtype": dt, "m": s, "n": s, "k": s} for dt in dtypes.supported(device) for s in SIZES[kind][suite]]

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        import torch

        m, n, k = int(params["m"]), int(params["n"]), int(params["k"])
        dtype = dtypes.torch_dtype(params["dtype"])
        gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        a = torch.randn(m, k, device=ctx.device, dtype=dtype, generator=gen)
        b = torch.randn(k, n, device=ctx.device, dtype=dtype, generator=gen)
        out = torch.empty(m, n, device=ctx.device, dtype=dtype)

        def step() -> None:
            torch.mm(a, b, out=out)

        inner = auto_inner(step, device=ctx.device)
        stats = measure(step, device=ctx.device, budget_s=ctx.budget_s, inner=inner)
        return WorkloadResult(self.name, dict(params), metrics=[
            rate_metric(stats, "tflops", "TFLOP/s", flops(m, n, k) / 1e12), time_metric(stats)])


WORKLOAD = Gemm()
