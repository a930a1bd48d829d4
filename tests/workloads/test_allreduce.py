"""Collectives over two local gloo ranks, and nccl-tests' bus-bandwidth formula by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.workloads import allreduce
from tests.workloads.storecheck import run_and_read

GiB = 1 << 30


def test_busbw_formula_against_a_hand_computed_case() -> None:
    # nccl-tests: 1 GiB all_reduce over 4 ranks in 0.1 s -> algbw 10.737 GB/s, busbw x 2(4-1)/4 = 1.5.
    algbw, busbw = allreduce.bandwidths("all_reduce", GiB, 0.1, 4)
    assert algbw == pytest.approx(10.737418240e9)
    assert busbw == pytest.approx(16.10612736e9)
    # all_gather and reduce_scatter over 8 ranks: (8-1)/8 = 0.875.
    assert allreduce.bandwidths("all_gather", GiB, 0.1, 8)[1] == pytest.approx(9.39524096e9)
    assert allreduce.bus_factor("reduce_scatter", 8) == 0.875
    assert allreduce.bus_factor("all_reduce", 2) == 1.0
    with pytest.raises(ValueError):
        allreduce.bus_factor("broadcast", 2)


def test_sizes_are_powers_of_two_rounded_to_whole_elements_per_rank() -> None:
    params = allreduce.WORKLOAD.params("standard", "cpu")
    assert {p["op"] for p in params} == set(allreduce.OPS)
    sizes = sorted({p["bytes"] for p in params})
    assert all(s & (s - 1) == 0 for s in sizes) and len(sizes) > 3
    assert allreduce.buffer_bytes(1000, 3) == 996  # 83 float32 per rank x 3 ranks
    assert allreduce.buffer_bytes(1, 2) == 8  # at least one element each


def test_collectives_run_stores_per_rank_times(sqlite_url: str, tmp_path: Path) -> None:
    # Two rank processes (each imports torch): a few seconds, the price of a real process group.
    params = [{"op": op, "bytes": 4096, "ranks": 2, "backend": "gloo"} for op in allreduce.OPS]
    params.append({"op": "all_reduce", "bytes": 4096, "ranks": 1, "backend": "gloo"})
    records, runs = run_and_read(sqlite_url, "allreduce", params, tmp_path)
    assert [r["status"] for r in runs] == ["ok", "ok", "ok", "skipped"], [r.result.error for r in records]
    for run in runs[:3]:
        res = run["results"]
        factor = allreduce.bus_factor(run["config"]["op"], 2)
        assert res["algbw"]["value"] == pytest.approx(4096 / res["time"]["median"])
        assert res["busbw"]["value"] == pytest.approx(res["algbw"]["value"] * factor)
        r0, r1 = res["time_rank0"], res["time_rank1"]
        assert len(r0["samples"]) == len(r1["samples"]) == res["time"]["count"] >= 5
        # the stored time is the per-iteration mean over ranks
        assert res["time"]["samples"][0] == pytest.approx((r0["samples"][0] + r1["samples"][0]) / 2)
    assert allreduce.WORKLOAD._group is None  # the runner closed the rank processes
