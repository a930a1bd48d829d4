"""Each placement policy on small constructed clusters, against choices computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.cluster import NodeSpec, Request, load_openb_nodes, load_openb_pods, make_cluster, make_requests
from planner.fragmentation import Workload, node_fragmentation
from planner.placement import PAPER_POLICIES, Placement, Placer, fgd_score, fill_cluster

OPENB = Path(__file__).resolve().parents[1] / "data" / "openb"


def share(milli: int, cpu: int = 0, allowed: np.ndarray | None = None) -> Request:
    return Request(cpu, 0, 1, milli, allowed)


def whole(n: int, cpu: int = 0) -> Request:
    return Request(cpu, 0, n, 1000)


def cluster(*nodes: tuple[int, int, str | None]) -> object:
    """Nodes as (cpu_milli, gpus, model); 64 GiB each."""
    return make_cluster([NodeSpec(f"n{i}", c, 65536, g, m) for i, (c, g, m) in enumerate(nodes)])


def one_class(milli: int, cpu: int = 0, num_gpu: int = 1) -> Workload:
    return Workload(np.array([cpu]), np.array([0]), np.array([num_gpu]), np.array([milli]),
                    np.array([[True, True, False]]), np.array([1.0]))


def put(pl: Placer, node: int, gpus: tuple[int, ...], req: Request) -> None:
    pl.allocate(Placement(node, gpus, req))


def test_feasibility_cpu_memory_model_and_gpu_room() -> None:
    c = cluster((8000, 2, "A"), (8000, 1, "B"), (8000, 0, None))
    pl = Placer(c, "first_fit")
    only_b = np.array([False, True, False])
    assert pl.choose(share(500, allowed=only_b)).node == 1
    assert pl.choose(whole(2)).node == 0
    assert pl.choose(whole(3)) is None
    assert pl.choose(Request(9000, 0, 0, 0)) is None  # more CPU than any node
    assert pl.choose(Request(1000, 70000, 0, 0)) is None  # more memory than any node
    assert pl.choose(Request(8000, 0, 0, 0)).node == 0  # CPU-only fits anywhere; first fit
    put(pl, 0, (0,), share(600))
    assert pl.choose(whole(2)) is None  # one whole GPU left on n0
    assert pl.choose(share(500)).gpus == (1,)  # first GPU with room: GPU 0 has only 400


def test_best_fit_and_dotprod_disagree_where_cpu_matters() -> None:
    # n0: 4 of 32 cores free, 2 GPUs free; n1: 32 cores, 1 GPU. Normalized by 32 cores and 2 GPUs.
    c = cluster((32000, 2, "A"), (32000, 1, "A"))
    for policy, node in (("best_fit", 0), ("dotprod", 1)):
        pl = Placer(c, policy)
        put(pl, 0, (), Request(28000, 0, 0, 0))
        # best_fit: n0 0.5*4/32 + 0.5*1700/2000 = 0.4875 < n1 0.5*32/32 + 0.5*700/2000 = 0.675
        # dotprod (no CPU demand): n0 2000*300 > n1 1000*300
        assert pl.choose(share(300)).node == node, policy


def test_best_fit_gpu_inside_node() -> None:
    pl = Placer(cluster((32000, 3, "A")), "best_fit")
    put(pl, 0, (1,), share(500))
    put(pl, 0, (2,), share(200))
    assert pl.choose(share(400)).gpus == (1,)  # 500 left is the tightest fit (800 and 1000 also fit)
    assert pl.choose(share(600)).gpus == (2,)


def test_gpu_packing_prefers_shared_gpu_then_used_node_then_empty_node() -> None:
    c = cluster((32000, 2, "A"), (32000, 2, "A"), (32000, 2, "A"))
    pl = Placer(c, "gpu_packing")
    put(pl, 0, (0,), share(400))  # n0: two shared GPUs with 600 left each
    put(pl, 0, (1,), share(400))
    put(pl, 1, (0,), whole(1))  # n1: used node with one free GPU
    assert pl.choose(share(300)).node == 0  # score 100 - 60/10 = 94
    assert pl.choose(share(700)).node == 1  # no shared GPU fits: free GPU on a used node (49) beats empty (31)
    assert pl.choose(whole(2)).node == 2  # only the empty node has two free GPUs


def test_gpu_clustering_prefers_nodes_running_the_same_kind() -> None:
    c = cluster((32000, 4, "A"), (32000, 4, "A"), (32000, 4, "A"))
    pl = Placer(c, "gpu_clustering")
    put(pl, 0, (0,), share(500))
    put(pl, 1, (0,), whole(1))
    assert pl.choose(share(300)).node == 0  # 75 + fill
    assert pl.choose(whole(1)).node == 1
    assert pl.choose(whole(2)).node == 2  # an idle node (25) beats nodes of other kinds (0 + fill <= 25)
    pl.release(Placement(0, (0,), share(500)))
    assert pl.affinity[0].sum() == 0


def test_random_picks_only_feasible_nodes_and_all_of_them() -> None:
    c = cluster((32000, 1, "A"), (32000, 1, "A"), (32000, 0, None), (32000, 1, "A"))
    pl = Placer(c, "random", rng=np.random.default_rng(7))
    put(pl, 3, (0,), whole(1))
    seen = {pl.choose(whole(1)).node for _ in range(60)}
    assert seen == {0, 1}


def test_fgd_avoids_the_node_where_the_popular_class_stops_fitting() -> None:
    # target workload: share 500. n0 GPU free 1000, n1 GPU free 700.
    # A 300 pod: n0 -> 700 left, class still fits, ΔF 0; n1 -> 400 left, class cannot run, ΔF +400.
    c = cluster((32000, 1, "A"), (32000, 1, "A"))
    wl = one_class(500)
    fgd, bf = Placer(c, "fgd", wl), Placer(c, "best_fit", wl)
    for pl in (fgd, bf):
        put(pl, 1, (0,), share(300))
    assert fgd.choose(share(300)).node == 0
    assert bf.choose(share(300)).node == 1  # best fit takes the fuller node
    cost, _ = Placer(c, "fgd_exact", wl).node_costs(share(300))
    assert list(cost) == [0.0, 0.0]  # empty cluster: both nodes still host the class afterwards


def test_fgd_picks_the_gpu_inside_the_node() -> None:
    # GPUs free [1000, 700]; a 300 pod on GPU 0 leaves [700, 700] (F 0), on GPU 1 leaves [1000, 400] (F 400)
    pl = Placer(cluster((32000, 2, "A")), "fgd_exact", one_class(500))
    put(pl, 0, (1,), share(300))
    cost, choice = pl.node_costs(share(300))
    assert cost[0] == pytest.approx(0.0) and choice[0] == 1000
    assert pl.choose(share(300)).gpus == (0,)


def test_fgd_keeps_cpu_pods_off_gpu_nodes_that_would_strand_gpus() -> None:
    # class: share 500 needing 8 cores. A 4-core CPU pod on the GPU node leaves 6 cores: ΔF = +1000.
    c = cluster((10000, 1, "A"), (10000, 0, None))
    pl = Placer(c, "fgd", one_class(500, cpu=8000))
    assert pl.choose(Request(4000, 0, 0, 0)).node == 1
    cost, _ = Placer(c, "fgd_exact", one_class(500, cpu=8000)).node_costs(Request(4000, 0, 0, 0))
    assert list(cost) == [1000.0, 0.0]


def test_fgd_score_is_the_artifacts_integer_sigmoid() -> None:
    assert fgd_score(np.array([0.0, 400.0, -400.0, 8000.0])).tolist() == [50.0, 40.0, 59.0, 0.0]


def test_release_restores_state_and_fragmentation() -> None:
    c = load_openb_nodes(OPENB / "openb_node_list_sample.csv")
    pods = load_openb_pods(OPENB / "openb_pod_list_sample.csv")
    from planner.fragmentation import target_workload

    wl = target_workload(pods, c.models, threshold=1.0)
    pl = Placer(c, "fgd", wl, rng=np.random.default_rng(0))
    before = pl.node_fragmentation().copy()
    masks = pods.allowed_masks(c.models)
    placed = [p for i in range(len(pods)) if (p := pl.place(pods.request(i, masks))) is not None]
    s = pl.state
    expect = node_fragmentation(s.cpu_left, s.mem_left, s.gpu_left, c.model_id, wl)
    assert pl.node_fragmentation() == pytest.approx(expect)  # incremental equals from scratch
    assert pl.allocated_milli == int(sum(p.request.total_gpu_milli for p in placed)) > 0
    for p in placed:
        pl.release(p)
    assert pl.allocated_milli == 0 and (pl.state.cpu_left == c.cpu_milli).all()
    assert pl.node_fragmentation() == pytest.approx(before)


def test_cached_costs_match_fresh_costs() -> None:
    c = load_openb_nodes(OPENB / "openb_node_list_sample.csv")
    pods = load_openb_pods(OPENB / "openb_pod_list_sample.csv")
    cls, _ = pods.class_ids()
    masks = pods.allowed_masks(c.models)
    from planner.fragmentation import target_workload

    pl = Placer(c, "fgd_exact", target_workload(pods, c.models))
    for i in range(len(pods)):
        req = pods.request(i, masks)
        cached, _ = pl.node_costs(req, int(cls[i]))
        fresh, _ = pl.node_costs(req)
        assert np.array_equal(cached, fresh)
        pl.place(req, int(cls[i]))


def test_fill_cluster_same_arrivals_for_every_policy() -> None:
    c = load_openb_nodes(OPENB / "openb_node_list_sample.csv")
    pods = load_openb_pods(OPENB / "openb_pod_list_sample.csv")
    curves = {p: fill_cluster(c, pods, p, seed=3) for p in PAPER_POLICIES}
    arrived = curves["fgd"].arrived_pct
    assert arrived[-1] >= 130 and arrived[-2] < 130
    for curve in curves.values():
        assert np.array_equal(curve.arrived_pct, arrived)
        assert (np.diff(curve.alloc_pct) >= 0).all() and curve.alloc_pct[-1] <= 100
        assert curve.failed > 0  # 130% of capacity cannot all fit
        assert curve.alloc_at(100) <= curve.alloc_at(130)


def test_whole_gpu_request_takes_free_gpus() -> None:
    pl = Placer(cluster((32000, 4, "A")), "fgd", one_class(1000, num_gpu=2))
    put(pl, 0, (1,), share(100))
    assert pl.choose(whole(2)).gpus == (0, 2)
    assert make_requests(["x"], [0], [0], [2], [1000]).request(0).total_gpu_milli == 2000
