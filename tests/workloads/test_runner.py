"""The runner: fingerprints, telemetry (a throttled GPU says so), failures stored, registry order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent import workloads
from agent.workloads import fingerprint as fp
from agent.workloads.runner import DeviceUnavailable, resolve_device
from agent.workloads.telemetry import CpuSource, Sampler, summary, throttle_notes
from collectors.fake_nvml import FakeNVML
from collectors.nvml import NvmlCollector
from db.stragglers import FINGERPRINT_KEYS
from tests.workloads.storecheck import run_and_read

KiB = 1 << 10
TINY_COPY = [{"op": "copy", "bytes": 64 * KiB}]


def test_registry_order_and_unknown_names() -> None:
    names = workloads.names()
    mine = [n for n in names if n in ("gemm", "membw", "allreduce", "storage")]
    assert mine == ["gemm", "membw", "allreduce", "storage"]
    assert names == [n for n in workloads.ORDER if n in names]
    assert [w.name for w in workloads.select(["storage", "gemm"])] == ["gemm", "storage"]
    with pytest.raises(workloads.UnknownWorkload, match="unknown workload 'nope'"):
        workloads.select(["gemm", "nope"])
    for w in workloads.select():
        assert w.description and w.params("quick", "cpu")


def test_registry_import_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, agent.workloads as w; w.names(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_failed_workload_is_stored_with_its_error_and_the_rest_still_run(sqlite_url: str, tmp_path: Path) -> None:
    params = [{"op": "nope", "bytes": 64 * KiB}, *TINY_COPY]
    records, runs = run_and_read(sqlite_url, "membw", params, tmp_path)
    assert [r["status"] for r in runs] == ["failed", "ok"]
    assert runs[0]["error"] == "ValueError: unknown membw op 'nope'"
    assert runs[0]["finished_at"] >= runs[0]["started_at"]
    assert records[1].run_id == runs[1]["id"]
    assert runs[1]["suite"] == "quick" and runs[1]["device"] == "cpu" and runs[1]["gpu_id"] is None


def test_node_registered_once_by_name(sqlite_url: str, tmp_path: Path) -> None:
    from sqlalchemy import select

    from db.engine import make_engine
    from db.models import Node

    run_and_read(sqlite_url, "membw", TINY_COPY, tmp_path)
    _, runs = run_and_read(sqlite_url, "membw", TINY_COPY, tmp_path)
    with make_engine(sqlite_url).connect() as conn:
        nodes = conn.execute(select(Node.id, Node.name)).all()
    assert [n.name for n in nodes] == ["test-node"] and {r["node_id"] for r in runs} == {nodes[0].id}


def test_cpu_telemetry_is_summarised_in_the_environment(sqlite_url: str, tmp_path: Path) -> None:
    _, runs = run_and_read(sqlite_url, "membw", TINY_COPY, tmp_path)
    tel = runs[0]["environment"]["telemetry"]
    assert tel["samples"] >= 2  # one at the start and one at the end, at least
    assert 0 <= tel["cpu"]["utilization_ratio"]["max"] <= 1


def test_a_throttled_gpu_says_so(sqlite_url: str, tmp_path: Path) -> None:
    # The fake NVML's "thermal" scenario: GPU 2 in thermal slowdown from t=5 s; we are at t=60 s.
    nvml = FakeNVML("thermal", start=time.time() - 60)
    gpu = NvmlCollector(nvml, event_thread=False)
    assert gpu.check()
    records, runs = run_and_read(sqlite_url, "membw", TINY_COPY, tmp_path, sources=[gpu], telemetry_interval=0.01)
    env = runs[0]["environment"]
    hot = env["telemetry"]["gpus"]["2"]
    assert hot["throttled_ratio"] == 1.0 and "hw_thermal_slowdown" in hot["clock_event_reasons"]
    assert env["telemetry"]["gpus"]["0"]["throttled_ratio"] == 0.0
    assert env["notes"] == records[0].result.notes
    assert any(n.startswith("GPU 2 throttled in 100% of samples (") for n in env["notes"])
    assert not any(n.startswith("GPU 0") for n in env["notes"])


def test_a_broken_telemetry_source_does_not_fail_the_benchmark() -> None:
    class Broken:
        name = "broken"

        def collect(self) -> list:
            raise RuntimeError("NVML timeout")

    s = Sampler([Broken(), CpuSource()], interval=0.01)
    s.start()
    time.sleep(0.05)
    samples = s.stop()
    assert samples and s.errors == ["broken: RuntimeError: NVML timeout"]
    assert throttle_notes(summary(samples)) == []


def test_fingerprint_records_what_makes_results_incomparable(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_bf16 ht\n")
    env = fp.fingerprint("cpu", dtype="bf16", cpuinfo=info)
    assert env["cpu_model"] == env["device_model"] == "Test CPU 9000"
    assert env["cpu_flags"] == "avx2 avx512_bf16 avx512f sse4_2"
    assert env["dtype"] == "bf16" and env["torch"] and env["python"] and env["host"]
    assert all(key in env for key in FINGERPRINT_KEYS)  # what the straggler rule compares is recorded


def test_gpu_identity_through_nvml_by_index_and_by_torch_uuid() -> None:
    nvml = FakeNVML("healthy")
    by_index = fp.gpu_identity(nvml, index=1)
    assert by_index["gpu_index"] == 1 and by_index["gpu_uuid"].startswith("GPU-") and by_index["gpu_model"]
    assert by_index["driver"]
    torch_style = by_index["gpu_uuid"].removeprefix("GPU-")  # torch prints UUIDs without the prefix
    assert fp.gpu_identity(nvml, uuid=torch_style)["gpu_index"] == 1


def test_resolve_device() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(DeviceUnavailable, match="torch sees no CUDA device"):
            resolve_device("cuda")
