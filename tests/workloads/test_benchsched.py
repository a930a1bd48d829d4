"""The agent's benchmark schedule: configuration, idle rule, one run at a time (also across processes)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.benchsched import BenchConfig, BenchScheduler, RunLock, node_idle
from agent.config import ConfigError, load_config
from collectors.records import Sample


def gpu(index: int, util: float | None, status: str = "ok") -> Sample:
    return Sample("gpu", 0.0, {"gpu_index": index, "gpu_uuid": f"GPU-{index}"},
                  {"status": status, "utilization_gpu_ratio": util})


def test_bench_section_of_the_agent_yaml(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("bench:\n  enabled: true\n  suite: standard\n  every: 6h\n  idle_utilization_threshold: 0.1\n"
                 "  workloads: [gemm, membw]\n")
    cfg = load_config(str(f), env={})
    assert cfg.bench == BenchConfig(enabled=True, suite="standard", every=6 * 3600, idle_utilization_threshold=0.1,
                                    workloads=["gemm", "membw"])
    assert load_config(None, env={}).bench.enabled is False


@pytest.mark.parametrize(("yaml", "message"), [
    ("bench:\n  suite: huge\n", "bench.suite: expected one of quick, standard, full"),
    ("bench:\n  often: 1h\n", "bench: unknown setting 'often'"),
    ("bench:\n  every: soon\n", "bench.every"),
    ("bench:\n  idle_utilization_threshold: 5\n", "bench.idle_utilization_threshold: expected a ratio"),
    ("bench: yes\n", "bench: expected a mapping"),
])
def test_bad_bench_settings_are_one_line(tmp_path: Path, yaml: str, message: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(yaml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(str(f), env={})


def test_idle_only_when_every_gpu_is_below_the_threshold() -> None:
    assert node_idle([gpu(0, 0.0), gpu(1, 0.04)], 0.05) == (True, "all GPUs idle")
    assert node_idle([gpu(0, 0.0), gpu(1, 0.5)], 0.05) == (False, "GPU 1 is 50% busy")
    assert node_idle([gpu(0, 0.0), gpu(1, None)], 0.05)[0] is False  # unknown is not idle
    assert node_idle([gpu(0, 0.0), gpu(1, None, status="lost")], 0.05)[0] is False
    host = Sample("host", 0.0, {}, {"cpu_utilization_ratio": 0.02})
    assert node_idle([host], 0.05) == (True, "host idle")  # a node without GPUs: the CPU decides
    assert node_idle([], 0.05)[0] is False


def scheduler(tmp_path: Path, samples: list[Sample], runs: list[BenchConfig], now: list[float],
              **cfg: object) -> BenchScheduler:
    return BenchScheduler(BenchConfig(enabled=True, every=3600, **cfg), tmp_path, samples=lambda: samples,  # type: ignore[arg-type]
                          run_suite=runs.append, clock=lambda: now[0])


def test_runs_when_due_and_idle_then_waits_for_the_period(tmp_path: Path) -> None:
    runs: list[BenchConfig] = []
    now = [1000.0]
    samples = [gpu(0, 0.5)]
    s = scheduler(tmp_path, samples, runs, now)
    assert s.check() == "busy: GPU 0 is 50% busy" and runs == []
    samples[0] = gpu(0, 0.01)
    assert s.check() == "ran" and len(runs) == 1
    now[0] += 1800
    assert s.check() == "not due"
    now[0] += 1800
    assert s.check() == "ran" and len(runs) == 2
    # the last run survives a restart
    now[0] += 60
    assert scheduler(tmp_path, samples, runs, now).check() == "not due"
    assert BenchScheduler(BenchConfig(), tmp_path, samples=lambda: samples, run_suite=runs.append).check() == "disabled"


def test_never_two_at_once_in_one_process(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(_cfg: BenchConfig) -> None:
        started.set()
        release.wait(5)

    ticks = itertools.count(step=10.0)  # always due
    s = BenchScheduler(BenchConfig(enabled=True, every=1), tmp_path, samples=lambda: [gpu(0, 0.0)],
                       run_suite=slow, clock=lambda: next(ticks))
    t = threading.Thread(target=s.check)
    t.start()
    assert started.wait(5)
    assert s.check() == "a run is in progress"
    other = BenchScheduler(BenchConfig(enabled=True, every=1), tmp_path, samples=lambda: [gpu(0, 0.0)],
                           run_suite=slow, clock=lambda: next(ticks))
    assert other.check().startswith("locked: another benchmark holds")
    release.set()
    t.join(5)


def test_the_lock_works_across_processes(tmp_path: Path) -> None:
    lock_path = tmp_path / "bench.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from agent.benchsched import RunLock\n"
        f"l = RunLock({str(lock_path)!r}); assert l.acquire(); print('held', flush=True); sys.stdin.readline()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = RunLock(lock_path)
        assert mine.acquire() is False
        holder.communicate("\n", timeout=10)
        assert mine.acquire() is True  # released when the holder exited
        mine.release()
    finally:
        holder.kill()


def test_wired_to_a_running_agent(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from agent.benchsched import start_for_agent

    stop = threading.Event()
    agent = SimpleNamespace(snapshot=SimpleNamespace(samples=[gpu(0, 0.9)]))
    cfg = load_config(None, env={}, overrides={"spool_dir": str(tmp_path)})
    assert start_for_agent(cfg, agent, stop) is None  # off unless configured
    cfg.bench = BenchConfig(enabled=True, check_every=3600)
    sched = start_for_agent(cfg, agent, stop)
    try:
        assert sched is not None and sched.check() == "busy: GPU 0 is 90% busy"  # the agent's latest samples
    finally:
        stop.set()
