"""``infer``: MLPerf-style inference scenarios on the GPT decoder, or the small MLP for quick runs.

- **single_stream**: closed loop, one query at a time, the next issued when the last returns; the
  headline is the p90 latency.
- **server**: open loop; queries arrive as a seeded Poisson process (``arrival_schedule``) whether or
  not the last one finished, and latency runs from the *scheduled* arrival (queueing included, so a
  slow system cannot hide its backlog). A bisection finds the highest rate whose p99 stays within
  ``latency_bound_s``.
- **offline**: every sample available at once, run in batches; the headline is samples per second.

``quantize: int8`` runs the same scenario on a dynamically int8-quantized copy too (torchao when
installed, else ``torch.ao.quantization.quantize_dynamic`` on the Linear layers) and reports its
speedup and how far its outputs are from the float model's. Each latency result carries the query
count behind its percentiles; a p99 from fewer than ``MIN_P99_QUERIES`` queries is flagged
low-confidence (a note and the ``p99_low_confidence`` metric).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from agent.workloads import dtypes
from agent.workloads.base import Metric, RunContext, WorkloadResult
from agent.workloads.harness import measure, percentile, summarize
from agent.workloads.model import GPT, MLP, GPTConfig
from agent.workloads.peaks import gpu_index

# MLPerf LoadGen's early-stopping floor for a p99 (loadgen/early_stopping.cc): with fewer queries,
# even a run with no query over the bound cannot claim its p99 at LoadGen's confidence.
MIN_P99_QUERIES = 662
SCENARIOS = ("single_stream", "server", "offline")
SPIN_S = 0.001  # sleep until this close to a scheduled arrival, then spin (sleep overshoots ~0.1 ms)

_MLP = {"model": "mlp", "inputs": 256, "hidden": 512, "outputs": 64, "layers": 3, "dtype": "fp32"}
_GPT_CPU = {"model": "gpt", "layers": 4, "width": 256, "heads": 8, "seq_len": 128, "vocab": 1024, "dtype": "fp32"}
_GPT_CUDA = {"model": "gpt", "layers": 12, "width": 768, "heads": 12, "seq_len": 256, "vocab": 50304,
             "dtype": "bf16"}


def arrival_schedule(qps: float, count: int, seed: int) -> list[float]:
    """When each of ``count`` queries arrives, in seconds from the start: a Poisson process of rate
    ``qps`` (independent exponential gaps of mean 1 / qps), the same for the same seed."""
    if qps <= 0 or count < 0:
        raise ValueError(f"need qps > 0 and count >= 0, got {qps}, {count}")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rng.expovariate(qps)
        out.append(t)
    return out


def serve(query: Callable[[], object], schedule: Sequence[float], *, sync: Callable[[], None] = lambda: None,
          clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> list[float]:
    """Issue ``query`` at each scheduled time (one server, in order) and return each query's latency
    from its scheduled arrival to its completion."""
    start = clock()
    out = []
    for at in schedule:
        due = start + at
        if (wait := due - clock()) > SPIN_S:
            sleep(wait - SPIN_S)
        while clock() < due:
            pass
        query()
        sync()
        out.append(clock() - due)
    return out


class Unsupported(Exception):
    """A parameter set this device (or this install) cannot run: the run is skipped, not failed."""


@dataclass(frozen=True, slots=True)
class Trial:
    qps: float
    latencies: list[float]
    p99: float
    ok: bool  # p99 within the bound


@dataclass(slots=True)
class Search:
    best: Trial | None  # the highest rate that met the bound; None: not even the lowest did
    trials: list[Trial] = field(default_factory=list)


def search_max_qps(trial: Callable[[float], list[float]], saturation_qps: float, bound_s: float,
                   steps: int) -> Search:
    """The highest arrival rate whose p99 latency is within ``bound_s``. ``trial(qps)`` returns one
    run's latencies. From the saturation rate (1 / service time: a queue is unstable above it) the
    rate halves until a trial meets the bound (at most ``steps`` times), then the interval between
    that rate and the failing one above it is bisected ``steps`` times."""
    found = Search(None)

    def run(qps: float) -> Trial:
        lat = trial(qps)
        p99 = percentile(lat, 99)
        t = Trial(qps, lat, p99, p99 <= bound_s)
        found.trials.append(t)
        return t

    qps, over = saturation_qps, None
    while not (t := run(qps)).ok:
        if len(found.trials) > steps:
            return found
        over, qps = qps, qps / 2
    found.best = t
    if over is None:  # even the saturation rate meets the bound
        return found
    lo, hi = qps, over
    for _ in range(steps):
        mid = run((lo + hi) / 2)
        if mid.ok:
            found.best, lo = mid, mid.qps
        else:
            hi = mid.qps
    return found


def build_model(params: dict[str, Any], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if params.get("model", "mlp") == "mlp":
        return MLP(int(params["inputs"]), int(params["hidden"]), int(params["outputs"]), int(params["layers"]))
    return GPT(GPTConfig.from_params(params))


def sample_inputs(model: nn.Module, count: int, seed: int) -> torch.Tensor:
    """``count`` query inputs for ``model`` (feature vectors or token sequences), seeded."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(model, MLP):
        return torch.randn(count, model.inputs, generator=gen)
    assert isinstance(model, GPT)
    return torch.randint(model.cfg.vocab, (count, model.cfg.seq_len), generator=gen)


def quantize_int8(model: nn.Module, device: str) -> tuple[nn.Module, str]:
    """A dynamically int8-quantized copy (weights int8, activations quantized per batch) and how."""
    q = copy.deepcopy(model).to(device)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        if device.startswith("cuda"):
            raise Unsupported("int8 dynamic quantization on CUDA needs torchao") from None
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8), "torch.ao quantize_dynamic (Linear)"
    quantize_(q, Int8DynamicActivationInt8WeightConfig())
    return q, "torchao Int8DynamicActivationInt8WeightConfig"


class Infer:
    name = "infer"
    description = ("MLPerf-style inference: single_stream p90 latency, server max QPS with p99 under a bound "
                   "(Poisson arrivals), offline samples/s; int8 dynamic quantization speedup and output error")

    def params(self, suite: str, device: str) -> list[dict[str, Any]]:
        cuda = device.startswith("cuda")
        if suite == "quick":
            model: dict[str, Any] = _MLP
            sizes = {"queries": 300, "server_queries": 200, "search_steps": 4, "batch": 256,
                     "latency_bound_s": 0.002 if cuda else 0.005}
        else:
            model = _GPT_CUDA if cuda else _GPT_CPU
            sizes = {"queries": 1024, "server_queries": 1000 if suite == "full" else MIN_P99_QUERIES + 38,
                     "search_steps": 6, "batch": 16, "latency_bound_s": 0.05 if cuda else 0.2}
        out = [{**model, "scenario": s, **sizes} for s in SCENARIOS]
        if not cuda or importlib.util.find_spec("torchao") is not None:  # torch.ao's int8 runs on CPUs only
            out.append({**model, "scenario": "offline", **sizes, "quantize": "int8"})
        return out

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        result = WorkloadResult(self.name, dict(params))
        scenario = params.get("scenario")
        if scenario not in SCENARIOS:
            result.status, result.error = "failed", f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})"
            return result
        try:
            with torch.inference_mode():
                self._run(ctx, params, result)
        except Unsupported as exc:
            result.status, result.error = "skipped", str(exc)
        except (RuntimeError, ValueError) as exc:  # out of memory, a bad size or parameter
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if ctx.device.startswith("cuda"):
                torch.cuda.empty_cache()
        return result

    def _run(self, ctx: RunContext, params: dict[str, Any], result: WorkloadResult) -> None:
        quantized = params.get("quantize")
        if quantized not in (None, "int8"):
            raise ValueError(f"unknown quantize {quantized!r} (int8)")
        if quantized and params["scenario"] == "server":
            raise Unsupported("quantize compares single_stream or offline runs")
        model = build_model(params, ctx.seed).eval()
        inputs = sample_inputs(model, max(int(params.get("batch", 1)), 64), ctx.seed + 1)
        if quantized:  # int8 dynamic quantization keeps float (fp32) activations and outputs
            q_model, how = quantize_int8(model, ctx.device)
            model = model.to(ctx.device)
            x = inputs.to(ctx.device)
            f_out, q_out = model(x).float(), q_model(x).float()
            diff = (q_out - f_out).abs()
            baseline, _ = _scenario(ctx, params, model, inputs)
            metrics, notes = _scenario(ctx, params, q_model, inputs)
            speedup = baseline[1] / metrics[1]
            result.metrics = [*metrics[0], Metric("speedup", "ratio", speedup),
                              Metric("output_max_abs_diff", "output", diff.max().item()),
                              Metric("output_mean_abs_diff", "output", diff.mean().item())]
            result.notes.append(f"int8 via {how}: {speedup:.2f}x the float model; outputs differ by at most "
                                f"{diff.max().item():.3g} ({diff.max().item() / f_out.abs().max().item():.2%} of "
                                f"the largest float output), {diff.mean().item():.3g} on average")
        else:
            dtype = dtypes.torch_dtype(str(params.get("dtype", "fp32")))
            model = model.to(device=ctx.device, dtype=dtype)
            metrics, notes = _scenario(ctx, params, model, inputs.to(dtype) if inputs.is_floating_point() else inputs)
            result.metrics = metrics[0]
        result.notes.extend(notes)
        low = result.metric("p99_low_confidence")
        if low is not None and low.value:
            result.notes.append(f"p99 from {low.count} queries (fewer than {MIN_P99_QUERIES}): low-confidence")


def _sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _latency_metrics(latencies: Sequence[float], headline: str, gpu: int | None) -> list[Metric]:
    s = summarize(latencies)
    value = s.p90 if headline == "p90" else s.p99
    return [Metric(f"latency_{headline}", "s", value, median=s.median, p90=s.p90, p99=s.p99, iqr=s.iqr, cv=s.cv,
                   count=s.count, samples=s.samples, gpu_index=gpu),
            Metric("p99_low_confidence", "bool", float(s.count < MIN_P99_QUERIES), count=s.count, gpu_index=gpu)]


def _scenario(ctx: RunContext, params: dict[str, Any], model: nn.Module,
              inputs: torch.Tensor) -> tuple[tuple[list[Metric], float], list[str]]:
    """Run the parameter set's scenario: (its metrics, the seconds per query they imply), notes."""
    device, scenario, gpu = ctx.device, params["scenario"], gpu_index(ctx.device)
    inputs = inputs.to(device)
    if scenario == "offline":
        batch = inputs[: int(params["batch"])]
        stats = measure(lambda: model(batch), device=device, warmup=2, budget_s=ctx.budget_s)
        rate = len(batch) / stats.median
        return ([Metric("samples_per_second", "samples/s", rate, count=stats.count, gpu_index=gpu)], 1 / rate), []
    n = len(inputs)
    i = [0]

    def query() -> object:
        i[0] = (i[0] + 1) % n
        return model(inputs[i[0]: i[0] + 1])

    queries = int(params["queries"])
    stats = measure(query, device=device, warmup=5, min_iters=queries, max_iters=queries, budget_s=ctx.budget_s)
    if scenario == "single_stream":
        return (_latency_metrics(stats.samples, "p90", gpu), stats.median), []
    count, sync, bound = int(params["server_queries"]), _sync(device), float(params["latency_bound_s"])
    seeds = iter(range(ctx.seed, ctx.seed + 1000))  # a fresh arrival schedule per trial, reproducible
    search = search_max_qps(lambda qps: serve(query, arrival_schedule(qps, count, next(seeds)), sync=sync),
                            1 / stats.median, bound, int(params["search_steps"]))
    notes = ["server trials: " + ", ".join(f"{t.qps:.4g}/s p99 {t.p99 * 1e3:.3g} ms {'ok' if t.ok else 'over'}"
                                           for t in search.trials)]
    if search.best is None:
        notes.append(f"no arrival rate met the p99 bound of {bound * 1e3:g} ms")
        return ([Metric("max_qps", "queries/s", None, count=count, gpu_index=gpu)], math.inf), notes
    return ([Metric("max_qps", "queries/s", search.best.qps, count=count, gpu_index=gpu),
             *_latency_metrics(search.best.latencies, "p99", gpu)], 1 / search.best.qps), notes


WORKLOAD = Infer()
