"""The train workload on tiny CPU sizes: PaLM's FLOP count, a falling loss, tokens/s, MFU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agent.workloads import peaks
from agent.workloads.base import RunContext, WorkloadResult
from agent.workloads.model import GPT, GPTConfig, non_embedding_params, train_flops_per_token
from agent.workloads.train import WORKLOAD, synthetic_batches

TINY = {"layers": 2, "width": 64, "heads": 4, "seq_len": 32, "vocab": 256, "batch": 8, "steps": 30, "lr": 3e-3}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and oversubscribed ones on a busy CI machine are slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(tmp_path: Path, **params: object) -> WorkloadResult:
    return WORKLOAD.run(RunContext(device="cpu", suite="quick", scratch_dir=tmp_path, budget_s=0.2),
                        {**TINY, **params})


def test_palm_flop_count_by_hand() -> None:
    cfg = GPTConfig(layers=2, width=64, heads=4, seq_len=32, vocab=256)
    # Per layer: 2 LayerNorms (2 x 2 x 64), QKV 64x192+192, output 64x64+64, MLP 64x256+256 and 256x64+64.
    per_layer = 256 + 12_480 + 4_160 + 16_640 + 16_448
    n = 2 * per_layer + 128 + 64 * 256  # final LayerNorm, untied head; embeddings excluded
    assert n == 116_480 == non_embedding_params(cfg) == GPT(cfg).non_embedding_params()
    # 6N + 12 L H Q T with L=2, H=4, Q=16, T=32.
    assert train_flops_per_token(cfg) == 6 * 116_480 + 12 * 2 * 4 * 16 * 32 == 748_032


def test_synthetic_tokens_are_seeded_markov_chains() -> None:
    a = list(synthetic_batches(64, 16, 4, 3, seed=7))
    b = list(synthetic_batches(64, 16, 4, 3, seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    pairs = {(int(p), int(q)) for t in a for row in t for p, q in zip(row[:-1], row[1:], strict=True)}
    successors = {p: {q for pp, q in pairs if pp == p} for p, _ in pairs}
    assert max(len(s) for s in successors.values()) <= 4  # four successors per token: learnable


def test_fp32_training_loss_falls_and_reports_rates(tmp_path: Path) -> None:
    r = run(tmp_path, dtype="fp32")
    assert r.status == "ok", r.error
    loss_start, loss_end = r.metric("loss_start"), r.metric("loss_end")
    assert loss_start and loss_end and loss_end.value < loss_start.value - 0.3  # ln 256 = 5.5 towards ln 4
    step = r.metric("step_time")
    assert step and step.count == 30 and step.samples is not None and len(step.samples) == 30
    assert step.p90 is not None and step.p90 >= step.median
    tokens = r.metric("tokens_per_second")
    assert tokens and tokens.value == pytest.approx(8 * 32 / step.median)
    tflops = r.metric("tflops")
    assert tflops and tflops.value == pytest.approx(748_032 * tokens.value / 1e12)
    mfu = r.metric("mfu")
    peak = peaks.device_peak("cpu", "fp32").flops
    assert mfu and peak and mfu.value == pytest.approx(tflops.value * 1e12 / peak)
    assert any("6N + 12LHQT" in n for n in r.notes) and any(n.startswith("loss ") for n in r.notes)


def test_bf16_autocast_trains_on_cpu_and_fp16_needs_cuda(tmp_path: Path) -> None:
    r = run(tmp_path, dtype="bf16", steps=20)
    assert r.status == "ok", r.error
    assert r.metric("loss_end").value < r.metric("loss_start").value  # type: ignore[union-attr]
    fp16 = run(tmp_path, dtype="fp16")
    assert fp16.status == "skipped" and "CUDA" in (fp16.error or "")


def test_a_loss_that_does_not_fall_fails_the_run(tmp_path: Path) -> None:
    r = run(tmp_path, dtype="fp32", lr=0.0, steps=10)
    assert r.status == "failed" and (r.error or "").startswith("loss did not fall")
    assert r.metric("tokens_per_second") is not None  # the numbers are kept, marked failed


def test_a_remembered_gemm_rate_is_the_cpu_peak() -> None:
    torch.set_num_threads(3)  # a thread count no other test uses: the cache is per thread count
    peaks.remember("cpu", "fp32", 2.5e11)
    assert peaks.device_peak("cpu", "fp32") == peaks.Peak(2.5e11, "measured: gemm workload")


def test_quick_params_are_tiny_and_per_dtype() -> None:
    sets = WORKLOAD.params("quick", "cpu")
    assert {p["dtype"] for p in sets} <= {"fp32", "bf16"} and "fp32" in {p["dtype"] for p in sets}
    assert all(p["layers"] <= 2 and p["width"] <= 64 for p in sets)
    assert {p["dtype"] for p in WORKLOAD.params("quick", "cuda")} <= {"bf16", "fp16"}
