"""The FGD fragmentation measure on hand-computed nodes, the target workload, and the cluster loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.cluster import ClusterFileError, load_cluster, load_openb_nodes, load_openb_pods, make_requests
from planner.fragmentation import Workload, node_fragmentation, target_workload
from tests.conftest import SHARED_DATA, missing

OPENB = Path(__file__).resolve().parents[1] / "data" / "openb"

# Models: 0 = A, 1 = B; the last column is GPU-less nodes.
# m0: shares 300 milli of one GPU, 1 core, 1 GiB, on model A only (p 0.5)
# m1: two whole GPUs, 2 cores, 4 GiB, any model (p 0.3)
# m2: CPU only, 1 core (p 0.2)
WL = Workload(cpu_milli=np.array([1000, 2000, 1000]), memory_mib=np.array([1024, 4096, 1024]),
              num_gpu=np.array([1, 2, 0]), gpu_milli=np.array([300, 1000, 0]),
              allowed=np.array([[True, False, False], [True, True, False], [False, False, False]]),
              popularity=np.array([0.5, 0.3, 0.2]))


def frag(cpu: int, mem: int, gpus: list[int], model: int) -> float:
    g = np.zeros((1, 4), dtype=np.int64)
    g[0, : len(gpus)] = gpus
    return float(node_fragmentation(np.array([cpu]), np.array([mem]), g, np.array([model]), WL)[0])


def test_every_class_fits_only_too_small_gpus_count() -> None:
    # idle 1000+1000+500+200 = 2700. m0 fits: the 200 GPU is too small -> 200.
    # m1 fits (two whole GPUs): every partial GPU counts -> 500+200 = 700. m2 needs no GPU -> 2700.
    assert frag(10000, 10000, [1000, 1000, 500, 200], 0) == pytest.approx(0.5 * 200 + 0.3 * 700 + 0.2 * 2700)


def test_lacking_cpu_makes_all_idle_gpus_fragments() -> None:
    # 1.5 cores: m1 (2 cores) cannot run -> 2700 for it
    assert frag(1500, 10000, [1000, 1000, 500, 200], 0) == pytest.approx(0.5 * 200 + 0.3 * 2700 + 0.2 * 2700)


def test_lacking_memory_makes_all_idle_gpus_fragments() -> None:
    # 2 GiB: m1 (4 GiB) cannot run
    assert frag(10000, 2048, [1000, 1000, 500, 200], 0) == pytest.approx(0.5 * 200 + 0.3 * 2700 + 0.2 * 2700)


def test_disallowed_model_makes_all_idle_gpus_fragments() -> None:
    # model B: m0 is not allowed there
    assert frag(10000, 10000, [1000, 1000, 500, 200], 1) == pytest.approx(0.5 * 2700 + 0.3 * 700 + 0.2 * 2700)


def test_too_few_whole_gpus_make_all_idle_gpus_fragments() -> None:
    # one whole GPU left: m1 needs two -> all 1000+500+200 = 1700 for it; m0 fits, 200 too small
    assert frag(10000, 10000, [1000, 500, 200, 0], 0) == pytest.approx(0.5 * 200 + 0.3 * 1700 + 0.2 * 1700)


def test_node_without_idle_gpus_has_no_fragments() -> None:
    assert frag(10000, 10000, [0, 0, 0, 0], 0) == 0.0
    assert frag(10000, 10000, [], -1) == 0.0


def test_target_workload_popularity_and_threshold() -> None:
    reqs = make_requests([f"p{i}" for i in range(10)], [1000] * 6 + [2000] * 3 + [4000],
                         [1] * 10, [1] * 6 + [0] * 3 + [2], [500] * 6 + [0] * 3 + [1000], ["", "", "", "", "", "",
                                                                                          "", "", "", "B"])
    wl = target_workload(reqs, ("A", "B"), threshold=0.95)
    assert list(wl.popularity) == pytest.approx([0.6, 0.3, 0.1])
    assert list(wl.gpu_milli) == [500, 0, 1000]
    assert wl.allowed.tolist() == [[True, True, False], [False, False, False], [False, True, False]]
    top = target_workload(reqs, ("A", "B"), threshold=0.9)
    assert list(top.popularity) == pytest.approx([6 / 9, 3 / 9])


def test_requests_reject_multi_gpu_sharing() -> None:
    with pytest.raises(ClusterFileError, match="whole GPUs"):
        make_requests(["bad"], [0], [0], [2], [500])


def test_openb_sample_loaders() -> None:
    cluster = load_openb_nodes(OPENB / "openb_node_list_sample.csv")
    assert cluster.n_nodes == 8
    assert cluster.total_gpu_milli == (8 + 8 + 4 + 2 + 8 + 2) * 1000
    assert cluster.models == ("G2", "P100", "T4", "V100M32")
    assert cluster.model_of(0) is None and cluster.model_of(2) == "G2"
    pods = load_openb_pods(OPENB / "openb_pod_list_sample.csv")
    assert len(pods) == 30 and pods.gpu_spec[9] == "V100M16|V100M32"
    masks = pods.allowed_masks(cluster.models)
    assert masks[9].tolist() == [False, False, False, True, False]  # V100M16 is not in this cluster
    assert masks[0].tolist() == [True, True, True, True, False]  # no spec: any model
    assert (pods.num_gpu[17], pods.gpu_milli[22], pods.cpu_milli[5]) == (8, 220, 20000)
    assert pods.extra["creation_time"][1] == 427061


def test_cluster_yaml(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("nodes:\n  - {name: h, count: 2, gpus: 8, model: H100}\n  - {name: cpu, gpus: 0}\n"
                 "speed: {H100: 2.0}\n")
    desc = load_cluster(f)
    assert desc.cluster.names == ("h-0", "h-1", "cpu-0")
    assert desc.cluster.total_gpu_milli == 16000 and desc.speed == {"H100": 2.0}
    f.write_text("nodes:\n  - {gpus: 8}\n")
    with pytest.raises(ClusterFileError, match="no model"):
        load_cluster(f)
    f.write_text("nodes: [")
    with pytest.raises(ClusterFileError, match="YAML"):
        load_cluster(f)


def test_openb_full_trace_counts() -> None:
    folder = SHARED_DATA / "alibaba_gpu_v2023"
    if not (folder / "openb_node_list_all_node.csv").exists():
        missing("shared openb trace not present")
    cluster = load_openb_nodes(folder / "openb_node_list_all_node.csv")
    assert (cluster.n_nodes, int((cluster.gpu_count > 0).sum()), cluster.total_gpu_milli) == (1523, 1213, 6212000)
    assert len(load_openb_pods(folder / "openb_pod_list_default.csv")) == 8152
