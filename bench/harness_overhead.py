"""Harness overhead: gpufleet's gemm result against ``torch.utils.benchmark.Timer(...).blocked_autorange()``
on the same op, size, dtype and thread count, in the same run.

The two are interleaved (gpufleet, Timer, gpufleet, Timer, ...) so drift on a shared machine hits
both alike. Targets: gpufleet's TFLOP/s at least 0.95 of Timer's (the harness adds no cost of its
own), and the coefficient of variation of gpufleet's per-iteration samples at most 3%.

    .venv/bin/python bench/harness_overhead.py [--rounds 3] [--budget 2] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

import torch  # noqa: E402
from torch.utils import benchmark  # noqa: E402

from agent.workloads import dtypes  # noqa: E402
from agent.workloads.base import RunContext  # noqa: E402
from agent.workloads.gemm import WORKLOAD as GEMM  # noqa: E402
from agent.workloads.gemm import flops  # noqa: E402
from bench import perfdoc  # noqa: E402

RATIO_TARGET, CV_TARGET = 0.95, 0.03


def timer_tflops(size: int, dtype: str, device: str, threads: int, min_run_time: float) -> float:
    """TFLOP/s from torch's own benchmark timer: median over blocks of back-to-back calls."""
    dt = dtypes.torch_dtype(dtype)
    a = torch.randn(size, size, dtype=dt, device=device)
    b = torch.randn(size, size, dtype=dt, device=device)
    out = torch.empty(size, size, dtype=dt, device=device)
    t = benchmark.Timer("torch.mm(a, b, out=out)", globals={"torch": torch, "a": a, "b": b, "out": out},
                        num_threads=threads)
    m = t.blocked_autorange(min_run_time=min_run_time)
    return flops(size, size, size) / m.median / 1e12


def gpufleet_result(size: int, dtype: str, device: str, threads: int, budget: float) -> tuple[float, float, int]:
    """(TFLOP/s, CV of the per-iteration times, samples) from the gemm workload itself."""
    with tempfile.TemporaryDirectory() as scratch:
        ctx = RunContext(device=device, suite="standard", scratch_dir=Path(scratch), budget_s=budget, threads=threads)
        r = GEMM.run(ctx, {"dtype": dtype, "m": size, "n": size, "k": size})
    tf, t = r.metric("tflops"), r.metric("time")
    assert tf is not None and t is not None and tf.value is not None and t.cv is not None and t.count is not None
    return tf.value, t.cv, t.count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved comparisons per case (median reported)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per measurement, each side")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--write", action="store_true", help="write the section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    sizes = args.sizes or ([4096, 8192] if device == "cuda" else [512, 1024])
    load_before = os.getloadavg()[0]
    rows, ok = [], True
    for dtype in dtypes.supported(device):
        for size in sizes:
            ours, theirs, cvs, ns = [], [], [], []
            for _ in range(args.rounds):
                tf, cv, n = gpufleet_result(size, dtype, device, threads, args.budget)
                ours.append(tf)
                cvs.append(cv)
                ns.append(n)
                theirs.append(timer_tflops(size, dtype, device, threads, args.budget))
            ratio = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
            cv = statistics.median(cvs)
            passed = ratio >= RATIO_TARGET and cv <= CV_TARGET
            ok &= passed
            rows.append([f"{dtype} {size}x{size}x{size}", f"{statistics.median(ours):.4g}",
                         f"{statistics.median(theirs):.4g}", f"{ratio:.3f}", f"{cv:.1%}",
                         str(int(statistics.median(ns))), "yes" if passed else "no"])
            print(" | ".join(rows[-1]), flush=True)
    load_after, cpus = os.getloadavg()[0], len(os.sched_getaffinity(0))
    lines = [
        "## Harness overhead (gemm vs torch.utils.benchmark)",
        "",
        *perfdoc.header([("torch", torch.__version__)]),
        f"- device: {device}, {threads} threads (both sides); {args.rounds} interleaved rounds per case, "
        f"{args.budget:g} s per measurement; medians over rounds",
        f"- 1-minute load average before / after: {load_before:.1f} / {load_after:.1f} on {cpus} CPUs"
        + (" (above the CPU count: other work shared the cores, and the CVs say so)"
           if max(load_before, load_after) > cpus else ""),
        f"- targets: ratio (gpufleet / Timer TFLOP/s) >= {RATIO_TARGET}, CV of gpufleet's per-iteration times "
        f"<= {CV_TARGET:.0%}",
        "",
        *perfdoc.table(["case", "gpufleet TFLOP/s", "Timer TFLOP/s", "ratio", "CV", "samples", "meets targets"], rows),
        "",
        "The CV is that of single iterations (what the stored samples hold); Timer reports block means, "
        "which hide per-call jitter. On a machine shared with other work the CV says so.",
    ]
    if args.write:
        perfdoc.write_section("harness-overhead", lines)
    else:
        print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
