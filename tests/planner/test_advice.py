"""Placement advice (``planner.advice``): healthy, free GPUs only, one node first, less fragmentation, faster
GPUs, a reason for each option; and ``gpufleet plan place``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from planner.advice import GpuCandidate, advise, rank, workload_from_sizes
from planner.recommend import acknowledge, recommend
from tests.planner.test_recommend import H100, POWER_CYCLE, T_END, H, add_bench, busy, cli, fleet, idle, set_health

A100 = "NVIDIA A100-SXM4-80GB"


def gpus_of(option: Any) -> set[tuple[str, int]]:
    return set(option.gpus)


def test_unhealthy_unknown_and_busy_gpus_are_not_offered(sqlite_url: str) -> None:
    def values(node: str, i: int, ts: float) -> dict[str, Any] | None:
        if node == "n1" and i == 1:
            return busy()
        if node == "n1" and i == 2 and ts > T_END - 600:
            return None  # stopped reporting ten minutes ago
        return idle()

    engine = fleet(sqlite_url, {"n1": (H100, 4)}, values, hours=1)
    set_health(engine, [("n1", 0, "unhealthy", ["XID 48 DBE"], "Drain the GPU, reset it.", T_END - H)])
    advice = advise(engine, 1, now=T_END, top=5)
    assert [o.gpus for o in advice.options] == [(("n1", 3),)]
    why = " | ".join(advice.excluded["n1"])
    assert "GPU 0 unhealthy: XID 48 DBE" in why and "GPU 1 busy (90% utilization, 1 process)" in why
    assert "GPU 2 unknown: no recent sample" in why
    assert advise(engine, 2, now=T_END).options == []  # one usable GPU
    assert "1 usable free GPU now, 2 needed" in advise(engine, 2, now=T_END).notes[-1]


def test_one_node_first_then_the_fewest_nodes(sqlite_url: str) -> None:
    def values(node: str, i: int, ts: float) -> dict[str, Any]:
        free = {"n1": 4, "n2": 6, "n3": 2, "a1": 8}[node]
        return idle() if i < free else busy()

    engine = fleet(sqlite_url, {"n1": (H100, 8), "n2": (H100, 8), "n3": (H100, 8), "a1": (A100, 8)}, values, hours=1)
    six = advise(engine, 6, "H100", now=T_END)
    assert [o.nodes for o in six.options] == [("n2",)]  # the only H100 node with six free GPUs
    assert six.options[0].reasons[0] == "one node" and "GPU model NVIDIA A100" in six.excluded["a1"][0]
    ten = advise(engine, 10, "H100", now=T_END)
    assert len(ten.options) == 1 and ten.options[0].nodes == ("n2", "n1")  # two nodes, not three
    assert len(ten.options[0].gpus) == 10 and ten.options[0].reasons[0].startswith("spans 2 nodes")
    any_model = advise(engine, 8, now=T_END)
    assert [o.nodes for o in any_model.options] == [("a1",)]  # only a1 has eight free GPUs
    assert advise(engine, 30, "H100", now=T_END).options == []  # 12 free H100s in all


def test_the_placement_that_fragments_less_comes_first() -> None:
    # Only 4-GPU jobs: a 1-GPU job on a node with 5 free GPUs leaves 4 (still a 4-GPU slot); on a node with
    # exactly 4 free it leaves 3 that no 4-GPU job can use.
    cands = ([GpuCandidate("five", i, H100, i < 5, "healthy") for i in range(8)]
             + [GpuCandidate("four", i, H100, i < 4, "healthy") for i in range(8)])
    options, _ = rank(cands, 1, workload=workload_from_sizes([4.0]))
    assert [o.nodes for o in options] == [("five",), ("four",)]
    assert options[0].fragmentation_increase == pytest.approx(0.0)
    assert options[1].fragmentation_increase == pytest.approx(3.0)
    assert "fragmentation +3.00 GPU" in options[1].reasons[2]


def test_degraded_gpus_and_slow_nodes_rank_after_healthy_fast_ones() -> None:
    def node(name: str, health: str = "healthy", speed: float | None = None) -> list[GpuCandidate]:
        return [GpuCandidate(name, i, H100, True, health if i == 0 else "healthy", "thermal throttling", speed)
                for i in range(2)]

    options, _ = rank(node("hot", "degraded") + node("slow", speed=0.85) + node("ok", speed=1.0), 2)
    assert [o.nodes[0] for o in options] == ["ok", "slow", "hot"]
    assert options[1].reasons[3] == ("measured speed 85% of the NVIDIA H100 80GB HBM3 fleet median (slowest chosen "
                                     "GPU, gemm/train)")
    assert options[2].reasons[1] == "degraded: hot GPU 0 (thermal throttling)"
    within, _ = rank(node("mixed", "degraded") + [GpuCandidate("mixed", 2, H100, True, "healthy")], 2)
    assert gpus_of(within[0]) == {("mixed", 1), ("mixed", 2)}  # the healthy GPUs of the node


def test_the_faster_node_is_preferred_by_its_benchmarks(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"n1": (H100, 2), "n2": (H100, 2), "n3": (H100, 2)}, lambda n, i, ts: idle(), hours=1)
    add_bench(engine, {("n1", 0): 0.97, ("n1", 1): 0.97, ("n2", 0): 1.02, ("n2", 1): 1.0, ("n3", 0): 1.0,
                       ("n3", 1): 0.8}, [T_END - 86400])
    advice = advise(engine, 2, now=T_END)
    assert [o.nodes[0] for o in advice.options] == ["n2", "n1", "n3"]  # n3's GPU 1 runs at 80%
    fleet_median = (0.97 + 1.0) / 2  # of the six GPUs' results; an option runs at its slowest GPU's pace
    assert [o.speed for o in advice.options] == pytest.approx([1.0 / fleet_median, 0.97 / fleet_median,
                                                               0.8 / fleet_median])
    assert all(len(o.reasons) == 4 for o in advice.options)
    one = advise(engine, 1, now=T_END)
    assert one.options[0].gpus == (("n2", 0),)  # the fastest GPU of the fastest node


def test_acknowledged_drain_takes_the_node_out(sqlite_url: str) -> None:
    engine = fleet(sqlite_url, {"n1": (H100, 2), "n2": (H100, 2)}, lambda n, i, ts: idle(), hours=1)
    set_health(engine, [("n1", 0, "unhealthy", ["GPU lost"], POWER_CYCLE, T_END - H)])
    assert {o.nodes for o in advise(engine, 1, now=T_END).options} == {("n1",), ("n2",)}  # GPU 1 of n1 is fine
    drain = next(r for r in recommend(engine, now=T_END, kinds=["drain"]) if r.target == "n1")
    acknowledge(engine, drain, "ops@example.com", now=T_END)
    advice = advise(engine, 1, now=T_END)
    assert {o.nodes for o in advice.options} == {("n2",)}
    assert "GPU 1 draining: drain acknowledged" in advice.excluded["n1"]


def test_cli_place(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    fleet(sqlite_url, {"n1": (H100, 4), "n2": (H100, 4)},
          lambda n, i, ts: busy() if n == "n1" and i == 0 else idle(), hours=1)
    code, out, _ = cli(capsys, "place", "--gpus", "4", "--db", sqlite_url, "--at", str(T_END - 30), "--json")
    doc = json.loads(out)
    assert code == 0 and [o["nodes"] for o in doc["options"]] == [["n2"]]
    assert doc["options"][0]["reasons"][0] == "one node" and "GPU 0 busy" in doc["excluded"]["n1"][0]
    code, out, _ = cli(capsys, "place", "--gpus", "2", "--model", "H100", "--db", sqlite_url, "--at", str(T_END - 30))
    # 1, 2 and 4 GPUs equally likely: n1's three free GPUs leave one (F 1 -> 2/3 GPU, -0.33), n2's four leave
    # two that no 4-GPU job can use (F 0 -> 2/3, +0.67)
    assert code == 0 and " 1. n1 GPUs 1,2" in out and " 2. n2 GPUs 0,1" in out and "- one node" in out
    assert "fragmentation -0.33 GPU" in out and "fragmentation +0.67 GPU" in out
    code, out, _ = cli(capsys, "place", "--gpus", "9", "--db", sqlite_url, "--at", str(T_END - 30))
    assert code == 1 and "no placement: 7 usable free GPUs now, 9 needed" in out


@pytest.mark.parametrize("argv", [["--gpus", "0"], ["--gpus", "2", "--at", "soon"], ["--gpus", "2", "--top", "0"]])
def test_cli_place_errors_are_one_line(sqlite_url: str, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = cli(capsys, "place", *argv, "--db", sqlite_url)
    assert code == 2 and out == "" and err.startswith("gpufleet: error: ") and len(err.strip().splitlines()) == 1
