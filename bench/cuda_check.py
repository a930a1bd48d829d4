"""The CUDA targets and the one short table of ``bench/gpu_check.sh``.

Targets, measured here in the same run on the same card: gpufleet's bf16 gemm at least 90% of a
plain ``torch.matmul`` loop, and gpufleet's device copy bandwidth at least 90% of a plain
``tensor.copy_`` loop (both timed with CUDA events around back-to-back calls, the way one would by
hand). With ``--bench-json`` (``gpufleet bench run --json``) and ``--agent-json`` (``gpufleet agent
run --once``) the table also shows the suite's headline results and what the real NVML collector saw.

    .venv/bin/python bench/cuda_check.py [--bench-json F] [--agent-json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

import torch  # noqa: E402

from agent.workloads.base import RunContext  # noqa: E402
from agent.workloads.gemm import WORKLOAD as GEMM  # noqa: E402
from agent.workloads.gemm import flops  # noqa: E402
from agent.workloads.membw import WORKLOAD as MEMBW  # noqa: E402

TARGET = 0.90
GEMM_SIZE = 8192
COPY_BYTES = 1 << 30
ROUNDS = 3


def plain_seconds(fn: Callable[[], object], iters: int = 50, warmup: int = 5) -> float:
    """Seconds per call of ``fn`` from CUDA events around ``iters`` back-to-back calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / iters


def gpufleet_value(workload: Any, params: dict[str, Any], metric: str) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        r = workload.run(RunContext(device="cuda", suite="standard", scratch_dir=Path(scratch), budget_s=2.0), params)
    m = r.metric(metric)
    if r.status != "ok" or m is None or m.value is None:
        raise SystemExit(f"cuda_check: {workload.name} {params} failed: {r.error}")
    return float(m.value)


def gemm_pair() -> tuple[float, float]:
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, device="cuda", dtype=torch.bfloat16)
    ours = gpufleet_value(GEMM, {"dtype": "bf16", "m": GEMM_SIZE, "n": GEMM_SIZE, "k": GEMM_SIZE}, "tflops")
    plain = flops(GEMM_SIZE, GEMM_SIZE, GEMM_SIZE) / plain_seconds(lambda: torch.matmul(a, b)) / 1e12
    return ours, plain


def copy_pair() -> tuple[float, float]:
    src = torch.ones(COPY_BYTES // 4, device="cuda")
    dst = torch.empty_like(src)
    ours = gpufleet_value(MEMBW, {"op": "copy", "bytes": COPY_BYTES}, "bandwidth")
    plain = 2 * COPY_BYTES / plain_seconds(lambda: dst.copy_(src))
    return ours, plain


def target_rows() -> tuple[list[list[str]], bool]:
    rows, ok = [], True
    for name, unit, scale, pair in (("bf16 gemm 8192^3 vs torch.matmul", "TFLOP/s", 1.0, gemm_pair),
                                    ("device copy 1 GiB vs tensor.copy_", "GB/s", 1e9, copy_pair)):
        ours, plain = [], []
        for _ in range(ROUNDS):  # interleaved, medians: clocks drift as the card warms
            o, p = pair()
            ours.append(o)
            plain.append(p)
        ratio = statistics.median(ours) / statistics.median(plain)
        ok &= ratio >= TARGET
        rows.append([name, f"{statistics.median(ours) / scale:.1f} {unit}", f"{statistics.median(plain) / scale:.1f} "
                     f"{unit}", f"{ratio:.2f} (>= {TARGET})", "ok" if ratio >= TARGET else "FAIL"])
        torch.cuda.empty_cache()
    return rows, ok


HEADLINES = {"gemm": "tflops", "membw": "bandwidth", "train": "tokens_per_second", "infer": None,
             "allreduce": "busbw", "storage": "throughput"}


def suite_rows(doc: dict[str, Any]) -> tuple[list[list[str]], bool]:
    """Per workload: runs ok/failed/skipped and the best headline value."""
    rows, ok = [], True
    by: dict[str, list[dict[str, Any]]] = {}
    for run in doc["runs"]:
        by.setdefault(run["workload"], []).append(run)
    for workload, runs in by.items():
        states = {s: sum(1 for r in runs if r["status"] == s) for s in ("ok", "failed", "skipped")}
        ok &= states["failed"] == 0
        metric = HEADLINES.get(workload) or next((m["metric"] for r in runs for m in r["metrics"]), None)
        values = [(m["value"], m["unit"], r["params"]) for r in runs for m in r["metrics"]
                  if m["metric"] == metric and m["value"] is not None]
        best = max(values, key=lambda v: v[0], default=None)
        throttled = sum(1 for r in runs if any("throttled" in n for n in r["notes"]))
        rows.append([f"suite: {workload}", f"{best[0]:.4g} {best[1]} ({metric})" if best else "-",
                     " ".join(f"{k}={v}" for k, v in best[2].items()) if best else "-",
                     f"{states['ok']} ok, {states['failed']} failed, {states['skipped']} skipped"
                     + (f", {throttled} throttled" if throttled else ""),
                     "ok" if states["failed"] == 0 else "FAIL"])
    return rows, ok


def nvml_rows(doc: dict[str, Any]) -> tuple[list[list[str]], bool]:
    """What the real NVML collector saw in one collection (``gpufleet agent run --once``)."""
    gpus = [r for r in doc["records"] if r.get("type") == "sample" and r.get("kind") == "gpu"]
    infos = {r["index"]: r for r in doc["records"] if r.get("type") == "gpu_info"}
    rows = []
    for g in gpus:
        v, idx = g["values"], g["key"]["gpu_index"]
        model = infos.get(idx, {}).get("model", "?")
        rows.append([f"nvml: GPU {idx}", str(model),
                     f"{(v.get('sm_clock_hz') or 0) / 1e6:.0f} MHz SM, {v.get('power_watts') or 0:.0f} W, "
                     f"{v.get('temperature_gpu_celsius')} C", f"status {v.get('status')}, "
                     f"clock events 0x{int(v.get('clock_event_reasons') or 0):x}",
                     "ok" if v.get("status") == "ok" else "FAIL"])
    if not rows:
        rows.append(["nvml", "no GPU samples", "-", "-", "FAIL"])
    return rows, bool(gpus) and all(r[-1] == "ok" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench-json", type=Path, help="output of gpufleet bench run --json")
    ap.add_argument("--agent-json", type=Path, help="output of gpufleet agent run --once")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("cuda_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    rows: list[list[str]] = []
    ok = True
    for path, fn in ((args.bench_json, suite_rows), (args.agent_json, nvml_rows)):
        if path is not None:
            r, good = fn(json.loads(path.read_text()))
            rows += r
            ok &= good
    r, good = target_rows()
    rows += r
    ok &= good
    head = ["check", "measured", "reference / detail", "result", ""]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    for row in (head, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("gpu_check: " + ("all targets met" if ok else "FAILED (see the rows marked FAIL)"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
