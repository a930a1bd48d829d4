"""``train``: a GPT-style decoder trained with AdamW on synthetic tokens, in fp32, bf16 or fp16.

What a training job on this device would get: tokens per second, the step-time distribution (every
step kept), the model FLOP rate by PaLM's count (6 N + 12 L H Q T per token) and MFU, that rate over
the device's peak for the dtype (``peaks``). The tokens come from a seeded Markov chain with four
successors per token, so the loss has somewhere to fall (from ln V towards ln 4): a run whose loss
does not fall (by ``MIN_LOSS_FALL``) is marked failed: its numbers would not be real training's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from agent.workloads import dtypes
from agent.workloads.base import Metric, RunContext, WorkloadResult
from agent.workloads.harness import measure, rate_metric, time_metric
from agent.workloads.model import GPT, GPTConfig, train_flops_per_token
from agent.workloads.peaks import device_peak, gpu_index

BRANCHES = 4  # successors per token in the synthetic language: entropy ln 4 nats per token
MIN_LOSS_FALL = 0.01  # the loss must fall by at least 1% (batch-to-batch noise is far smaller)

_TINY = {"layers": 2, "width": 64, "heads": 4, "seq_len": 32, "vocab": 256, "batch": 8, "steps": 40, "lr": 3e-3}
_SIZES: dict[tuple[str, bool], dict[str, Any]] = {  # (suite, cuda) -> sizes
    ("quick", False): _TINY,
    ("standard", False): {**_TINY, "layers": 4, "width": 256, "heads": 8, "seq_len": 128, "vocab": 1024,
                          "steps": 40, "lr": 1e-3},
    ("full", False): {**_TINY, "layers": 6, "width": 384, "heads": 6, "seq_len": 256, "vocab": 4096, "steps": 60,
                      "lr": 1e-3},
    ("quick", True): {**_TINY, "layers": 4, "width": 512, "heads": 8, "seq_len": 256, "vocab": 8192, "steps": 40,
                      "lr": 1e-3},
    # GPT-2 small (124M) and medium (350M) shapes.
    ("standard", True): {"layers": 12, "width": 768, "heads": 12, "seq_len": 1024, "vocab": 50304, "batch": 8,
                         "steps": 50, "lr": 6e-4},
    ("full", True): {"layers": 24, "width": 1024, "heads": 16, "seq_len": 1024, "vocab": 50304, "batch": 16,
                     "steps": 80, "lr": 3e-4},
}


def synthetic_batches(vocab: int, seq_len: int, batch: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """``count`` token batches (batch, seq_len + 1) from a seeded Markov chain: each token has
    ``BRANCHES`` possible successors, drawn once from the seed."""
    gen = torch.Generator().manual_seed(seed)
    successors = torch.randint(vocab, (vocab, BRANCHES), generator=gen)
    for _ in range(count):
        tokens = torch.empty(batch, seq_len + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(vocab, (batch,), generator=gen)
        choice = torch.randint(BRANCHES, (batch, seq_len), generator=gen)
        for t in range(seq_len):
            tokens[:, t + 1] = successors[tokens[:, t], choice[:, t]]
        yield tokens


def matmul_dtype(dtype: str, device: str) -> str:
    """The dtype the peak is looked up for: FP32 matmuls on a GPU run on TF32 tensor cores when
    torch allows it (``set_float32_matmul_precision`` other than "highest")."""
    if dtype == "fp32" and device.startswith("cuda") and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return dtype


def unsupported(dtype: str, device: str) -> str | None:
    """Why ``dtype`` cannot train on ``device``, or None."""
    if dtype not in ("fp32", "bf16", "fp16"):
        return f"unknown dtype {dtype!r} (fp32, bf16 or fp16)"
    if dtype == "fp16" and not device.startswith("cuda"):
        return "fp16 training needs CUDA (loss scaling with GradScaler); CPU autocast trains in bf16"
    if dtype == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support"
    return None


class Train:
    name = "train"
    description = ("GPT-style decoder trained with AdamW on synthetic tokens: tokens/s, step time (median, p90), "
                   "model TFLOP/s by PaLM's 6N+12LHQT count and MFU against the device's peak for the dtype")

    def params(self, suite: str, device: str) -> list[dict[str, Any]]:
        """Every dtype the device runs natively (``dtypes.supported``); on a GPU the quick suite
        skips fp32, which no one trains in there."""
        cuda = device.startswith("cuda")
        chosen = [dt for dt in dtypes.supported(device) if not (cuda and suite == "quick" and dt == "fp32")]
        return [{**_SIZES[(suite, cuda)], "dtype": dt} for dt in chosen]

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        result = WorkloadResult(self.name, dict(params))
        dtype = str(params.get("dtype", "fp32"))
        why = unsupported(dtype, ctx.device)
        if why is not None:
            result.status, result.error = "skipped", why
            return result
        try:
            return self._train(ctx, params, dtype, result)
        except (RuntimeError, ValueError) as exc:  # out of memory, a bad size: this run failed, not the suite
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            return result
        finally:
            if ctx.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def _train(self, ctx: RunContext, params: dict[str, Any], dtype: str, result: WorkloadResult) -> WorkloadResult:
        cfg = GPTConfig.from_params(params)
        batch, steps, warmup = int(params["batch"]), int(params["steps"]), int(params.get("warmup", 3))
        device, cuda = ctx.device, ctx.device.startswith("cuda")
        torch.manual_seed(ctx.seed)
        model = GPT(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=float(params.get("lr", 1e-3)), weight_decay=0.1,
                                fused=cuda)
        scaler = torch.amp.GradScaler("cuda") if dtype == "fp16" else None
        autocast = (torch.autocast("cuda" if cuda else "cpu", dtype=dtypes.torch_dtype(dtype)) if dtype != "fp32"
                    else contextlib.nullcontext())
        data = [b.to(device) for b in synthetic_batches(cfg.vocab, cfg.seq_len, batch, warmup + steps, ctx.seed)]
        losses: list[torch.Tensor] = []

        def step() -> None:
            tokens = data[len(losses) % len(data)]
            with autocast:
                logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(loss.detach())

        stats = measure(step, device=device, warmup=warmup, min_iters=steps, max_iters=steps, budget_s=ctx.budget_s)
        curve = [float(v) for v in torch.stack(losses).cpu()]
        tokens_per_step = batch * cfg.seq_len
        flops_per_step = train_flops_per_token(cfg) * tokens_per_step
        flops = flops_per_step / stats.median
        peak = device_peak(device, matmul_dtype(dtype, device))
        mfu = flops / peak.flops if peak.flops else None
        gpu = gpu_index(device)
        result.metrics = [
            rate_metric(stats, "tokens_per_second", "tokens/s", tokens_per_step, gpu_index=gpu),
            time_metric(stats, "step_time", gpu_index=gpu),
            rate_metric(stats, "tflops", "TFLOP/s", flops_per_step / 1e12, gpu_index=gpu),
            Metric("mfu", "ratio", mfu, count=stats.count, gpu_index=gpu),
            Metric("loss_start", "nats", curve[0], gpu_index=gpu),
            Metric("loss_end", "nats", curve[-1], gpu_index=gpu),
        ]
        result.notes.append(f"N = {model.non_embedding_params():,} non-embedding parameters, "
                            f"{train_flops_per_token(cfg):.4g} FLOP/token (6N + 12LHQT)")
        result.notes.append(f"MFU peak: {peak.source}" if peak.flops else f"no MFU: {peak.source}")
        k = max(1, len(curve) // 5)
        first, last = sum(curve[:k]) / k, sum(curve[-k:]) / k
        if not (math.isfinite(last) and last <= (1 - MIN_LOSS_FALL) * first):
            result.status, result.error = "failed", f"loss did not fall: {first:.3f} -> {last:.3f}"
        result.notes.append(f"loss {first:.3f} -> {last:.3f} (mean of the first and last {k} steps; "
                            f"floor ln {BRANCHES} = {math.log(BRANCHES):.3f})")
        return result


WORKLOAD = Train()
