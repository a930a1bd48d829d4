"""The what-if simulator against hand-simulated traces, the capacity search, and ``gpufleet plan simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpufleet.cli import main
from planner.cluster import NodeSpec, load_openb_nodes, load_openb_pods, make_cluster, make_requests
from planner.simulate import JobTrace, capacity_search, node_template, simulate, trace_from_openb

OPENB = Path(__file__).resolve().parents[1] / "data" / "openb"


def trace(rows: list[tuple[float, float, int]]) -> JobTrace:
    """Jobs as (submit s, duration s, whole GPUs)."""
    n = len(rows)
    reqs = make_requests([f"j{i}" for i in range(n)], [0] * n, [0] * n, [r[2] for r in rows],
                         [1000 if r[2] else 0 for r in rows])
    return JobTrace(reqs, np.array([r[0] for r in rows], float), np.array([r[1] for r in rows], float))


ONE_NODE = make_cluster([NodeSpec("n0", 32000, 65536, 4, "A")])
# j0 takes 3 of 4 GPUs until 10; j1 needs all 4 (blocked until 10); j2 is short (1 GPU, 3 s);
# j3 is long (1 GPU, 20 s).
BACKFILL = trace([(0, 10, 3), (1, 5, 4), (2, 3, 1), (3, 20, 1)])


def test_fifo_blocks_behind_the_head_job() -> None:
    r = simulate(ONE_NODE, BACKFILL, "fifo", "first_fit")
    assert r.start.tolist() == [0, 10, 15, 15]
    assert r.end.tolist() == [10, 15, 18, 35]
    assert r.queue_delay.tolist() == [0, 9, 13, 12]


def test_easy_backfills_a_short_job_without_delaying_the_head() -> None:
    r = simulate(ONE_NODE, BACKFILL, "easy", "first_fit")
    # j2 ends at 5, before the head's reservation at 10: it starts at once on the free GPU.
    # j3 would run past 10 on the reserved node: it waits. The head still starts at 10, as under FIFO.
    assert r.start.tolist() == [0, 10, 2, 15]
    assert r.end.tolist() == [10, 15, 5, 35]


def test_sjf_starts_the_shortest_waiting_job_first() -> None:
    r = simulate(ONE_NODE, BACKFILL, "sjf", "first_fit")
    # at 2 the queue is j1 (5 s) and j2 (3 s): j2 goes first and fits
    assert r.start.tolist() == [0, 10, 2, 15]
    assert r.summary()["queue_delay_p50_s"] == pytest.approx(np.percentile([0, 9, 0, 12], 50))


def test_easy_backfills_elsewhere_when_the_job_outlasts_the_reservation() -> None:
    two = make_cluster([NodeSpec("n0", 32000, 65536, 4, "A"), NodeSpec("n1", 32000, 65536, 1, "A")])
    # j0 fills n0 until 10, j1 (4 GPUs) reserves n0 at 10; j2 (1 GPU, 100 s) may run on n1, not n0
    r = simulate(two, trace([(0, 10, 4), (1, 5, 4), (2, 100, 1)]), "easy", "first_fit")
    assert r.start.tolist() == [0, 10, 2] and r.node.tolist() == [0, 0, 1]


def test_speed_factor_divides_run_time_and_series_track_allocation() -> None:
    c = make_cluster([NodeSpec("a", 32000, 65536, 1, "A"), NodeSpec("b", 32000, 65536, 1, "B")])
    r = simulate(c, trace([(0, 10, 1), (0, 10, 1), (0, 10, 0)]), "fifo", "first_fit", speed={"B": 2.0})
    assert r.node.tolist() == [0, 1, 0]
    assert r.end.tolist() == [10, 5, 10]  # the CPU-only job ignores GPU speed
    assert r.times.tolist() == [0, 5, 10]
    assert r.alloc_ratio.tolist() == [1.0, 0.5, 0.0]
    s = r.summary()
    assert s["jct_mean_s"] == pytest.approx(25 / 3) and s["completed"] == 3 and s["unplaceable"] == 0


def test_unplaceable_jobs_are_counted_not_queued() -> None:
    r = simulate(ONE_NODE, trace([(0, 10, 8), (0, 10, 1)]), "fifo", "fgd")
    assert r.unplaceable == 1 and r.summary()["completed"] == 1


def test_capacity_search_finds_the_fewest_nodes() -> None:
    # four 1-GPU jobs of 100 s at once; with n GPUs the delays are 0 for the first n, then 100, 200...
    # p90 (linear): n=1: 270, n=2: 100, n=3: 70, n=4: 0
    base = make_cluster([NodeSpec("n0", 32000, 65536, 1, "A")])
    jobs = trace([(0, 100, 1)] * 4)
    tmpl = node_template(base, "A")
    assert tmpl.gpus == 1
    res = capacity_search(base, jobs, tmpl, 50.0, queue="fifo", placement="best_fit")
    assert res.added_nodes == 3 and res.added_gpus == 3
    assert res.evaluations == {0: 270.0, 1: 100.0, 2: pytest.approx(70.0), 4: 0.0, 3: 0.0}
    assert capacity_search(base, jobs, tmpl, 80.0, placement="best_fit").added_nodes == 2
    assert capacity_search(base, jobs, tmpl, 300.0).added_nodes == 0
    assert capacity_search(base, jobs, tmpl, 10.0, max_added=2).added_nodes is None


def test_openb_pod_list_as_trace() -> None:
    pods = load_openb_pods(OPENB / "openb_pod_list_sample.csv")
    tr = trace_from_openb(pods)
    assert tr.submit[1] == 427061 and tr.duration[1] == 12902960 - 427061
    r = simulate(load_openb_nodes(OPENB / "openb_node_list_sample.csv"), tr, "easy", "fgd")
    assert r.summary()["completed"] + r.unplaceable == 30
    assert 0 < max(r.frag_ratio) <= 1


def _files(tmp_path: Path) -> tuple[str, str]:
    cl = tmp_path / "cluster.yaml"
    cl.write_text("nodes:\n  - {name: a, count: 1, gpus: 1, model: A}\nspeed: {A: 1.0}\n")
    tr = tmp_path / "jobs.csv"
    tr.write_text("job_id,submit_time,duration,num_gpu\n" + "".join(f"j{i},0,100,1\n" for i in range(4)))
    return str(cl), str(tr)


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cl, tr = _files(tmp_path)
    assert main(["plan", "simulate", "--trace", tr, "--cluster", cl, "--queue", "fifo,easy",
                 "--placement", "best_fit"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["queue", "placement", "jobs"]
    assert out[1].split()[:4] == ["fifo", "best_fit", "4", "0"] and "4.5m" in out[1]  # p90 270 s
    assert main(["plan", "simulate", "--trace", tr, "--cluster", cl, "--json", "--add-model", "A",
                 "--target-p90", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"][0]["queue_delay_p90_s"] == pytest.approx(270.0)
    assert doc["capacity"]["added_nodes"] == 3 and doc["capacity"]["added_gpus"] == 3
    assert doc["results"][0]["series"]["allocation_ratio"][0] == 1.0


def test_cli_capacity_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cl, tr = _files(tmp_path)
    assert main(["plan", "simulate", "--trace", tr, "--cluster", cl, "--add-model", "B", "--add-node-gpus", "2",
                 "--target-p90", "0", "--speed", "B=2"]) == 0
    assert "add 2 node(s) of B (4 GPUs)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--trace", "/no/such.csv"], "no such file"),
    (["--cluster", "TRACE"], "missing column"),
    (["--queue", "lifo"], "unknown queue policy lifo"),
    (["--placement", "magic"], "unknown placement policy magic"),
    (["--add-model", "A"], "go together"),
    (["--speed", "A=fast"], "MODEL=FACTOR"),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                   message: str) -> None:
    cl, tr = _files(tmp_path)
    opts = {"--trace": tr, "--cluster": cl}
    for k, v in zip(args[::2], args[1::2], strict=True):
        opts[k] = tr if v == "TRACE" else v
    assert main(["plan", "simulate", *[x for kv in opts.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpufleet: error:") and message in err[0]


def test_cli_bad_trace_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cl, tr = _files(tmp_path)
    Path(tr).write_text("job_id,submit_time,duration,num_gpu,gpu_milli\nj,0,10,2,500\n")
    assert main(["plan", "simulate", "--trace", tr, "--cluster", cl]) == 2
    assert "whole GPUs" in capsys.readouterr().err
    Path(tr).write_text("job_id,submit_time,duration,num_gpu\nj,soon,10,1\n")
    assert main(["plan", "simulate", "--trace", tr, "--cluster", cl]) == 2
    assert "not numeric" in capsys.readouterr().err
