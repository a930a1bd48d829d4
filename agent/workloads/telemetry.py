"""Telemetry sampled while a benchmark runs, so a slow result from a throttled GPU says so.

A background thread polls the node's telemetry sources (the NVML collector on a GPU node; CPU
frequency and utilisation through psutil otherwise) every ``interval`` seconds between
:meth:`Sampler.start` and :meth:`Sampler.stop`; :func:`summary` reduces what it saw to a small JSON
object stored with the run, and :func:`throttle_notes` turns power or thermal clock events into a
note the results table shows.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from collectors.nvml import decode_reasons
from collectors.records import Record, Sample
from db.rollups import THROTTLE

# A GPU counts as throttled during a run when at least this share of its samples had a power or
# thermal clock-event reason (one stray sample at the start of a load step is not throttling).
THROTTLED_SHARE = 0.1


class CpuSource:
    """CPU frequency and utilisation through psutil (a telemetry source for CPU runs)."""

    name = "cpu"

    def __init__(self, psutil_module: Any = None, clock: Callable[[], float] = time.time) -> None:
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._clock = clock
        self._psutil.cpu_percent(interval=None)  # primes the counter: the next call measures since now

    def check(self) -> bool:
        return True

    def collect(self) -> list[Record]:
        freq = self._psutil.cpu_freq()
        values: dict[str, Any] = {
            "cpu_frequency_hz": freq.current * 1e6 if freq and freq.current else None,
            "cpu_frequency_max_hz": freq.max * 1e6 if freq and freq.max else None,
            "cpu_utilization_ratio": self._psutil.cpu_percent(interval=None) / 100.0,
        }
        return [Sample(kind="cpu", ts=self._clock(), key={}, values=values)]

    def close(self) -> None:
        return None


class Sampler:
    """Polls ``sources`` in a thread while a workload runs. A source that raises is dropped for the
    rest of the window (telemetry must never fail a benchmark)."""

    def __init__(self, sources: Sequence[Any], interval: float = 0.5) -> None:
        self.sources = list(sources)
        self.interval = interval
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self) -> None:
        self._samples = []
        self._stop.clear()
        self._poll()  # one sample at the start, however short the run
        self._thread = threading.Thread(target=self._loop, name="bench-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._poll()  # and one at the end
        return list(self._samples)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        for source in list(self.sources):
            try:
                records = source.collect()
            except Exception as exc:  # a broken source costs its telemetry, not the benchmark
                self.errors.append(f"{getattr(source, 'name', source)}: {type(exc).__name__}: {exc}")
                self.sources.remove(source)
                continue
            self._samples.extend(r for r in records if isinstance(r, Sample) and r.kind in ("gpu", "cpu"))


def _spread(values: Sequence[Any]) -> dict[str, float] | None:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return {"min": min(xs), "mean": statistics.fmean(xs), "max": max(xs)}


def summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per GPU (by NVML index): clocks, power, temperature and the clock-event reasons seen, with
    the share of samples that were power or thermal throttled; on CPU: frequency and utilisation."""
    out: dict[str, Any] = {"samples": len(samples)}
    gpus: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        if s.kind == "gpu" and s.values.get("status") == "ok":
            gpus.setdefault(int(s.key["gpu_index"]), []).append(s.values)
    if gpus:
        out["gpus"] = {}
        for index, rows in sorted(gpus.items()):
            masks = [int(r["clock_event_reasons"]) for r in rows if r.get("clock_event_reasons") is not None]
            seen: set[str] = set()
            for m in masks:
                seen.update(decode_reasons(m))
            out["gpus"][str(index)] = {
                "samples": len(rows),
                "sm_clock_hz": _spread([r.get("sm_clock_hz") for r in rows]),
                "sm_clock_max_hz": rows[-1].get("sm_clock_max_hz"),
                "power_watts": _spread([r.get("power_watts") for r in rows]),
                "temperature_celsius": _spread([r.get("temperature_gpu_celsius") for r in rows]),
                "utilization_ratio": _spread([r.get("utilization_gpu_ratio") for r in rows]),
                "clock_event_reasons": sorted(seen),
                "throttled_ratio": sum(1 for m in masks if m & THROTTLE) / len(masks) if masks else None,
            }
    cpu = [s.values for s in samples if s.kind == "cpu"]
    if cpu:
        out["cpu"] = {"frequency_hz": _spread([r.get("cpu_frequency_hz") for r in cpu]),
                      "frequency_max_hz": cpu[-1].get("cpu_frequency_max_hz"),
                      "utilization_ratio": _spread([r.get("cpu_utilization_ratio") for r in cpu])}
    return out


def throttle_notes(telemetry: dict[str, Any]) -> list[str]:
    """One line per GPU that was power or thermal throttled for a real share of the run."""
    notes = []
    for index, g in (telemetry.get("gpus") or {}).items():
        share = g.get("throttled_ratio")
        if share is not None and share >= THROTTLED_SHARE:
            reasons = [r for r in g["clock_event_reasons"] if r not in ("gpu_idle", "applications_clocks_setting",
                                                                        "sync_boost", "display_clock_setting")]
            notes.append(f"GPU {index} throttled in {share:.0%} of samples ({', '.join(reasons)}): "
                         "this result understates the hardware")
    return notes
