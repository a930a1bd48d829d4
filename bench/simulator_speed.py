"""Simulator speed: jobs simulated per second by ``planner.simulate`` on a synthetic 100,000-job trace
over 1,000 nodes with FIFO and fragmentation-aware (fgd) placement; target: the whole trace in under 10 s.

The trace: run times drawn from the 83,154 Philly job run times of the shared data, GPU requests
(count and sharing fraction) drawn from the openb default pod list with CPU and memory proportional to
the GPU share (8 cores and 32 GiB per GPU), Poisson arrivals at twice the rate whose mean GPU-seconds
would fill the cluster (a few very long jobs, Philly's p99 run time is 80 h, carry most GPU-seconds, so
at this rate the arrival window sees about two thirds of the GPUs allocated and a real queue). The
cluster: 1,000 nodes drawn (seeded) from the openb GPU node list. Reference in the same run: the same
trace with first-fit placement, the cheapest policy, so the table shows what fragmentation awareness
costs. Writes the ``bench:simulator`` section of ``docs/PERFORMANCE.md`` with ``--write``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
from perfdoc import ROOT, fmt_int, header, package_version, table, write_section

from planner.cluster import Cluster, NodeSpec, load_openb_nodes, load_openb_pods, make_cluster, make_requests
from planner.simulate import JobTrace, simulate, synthetic_trace

DATA = ROOT.parent / "shared" / "data"


def build(n_jobs: int, n_nodes: int, seed: int, load: float) -> tuple[Cluster, JobTrace]:
    nodes = load_openb_nodes(DATA / "alibaba_gpu_v2023" / "openb_node_list_gpu_node.csv").specs()
    rng = np.random.default_rng(seed)
    cluster = make_cluster([NodeSpec(f"node-{k}", nodes[i].cpu_milli, nodes[i].memory_mib, nodes[i].gpus,
                                     nodes[i].model) for k, i in enumerate(rng.integers(len(nodes), size=n_nodes))])
    pods = load_openb_pods(DATA / "alibaba_gpu_v2023" / "openb_pod_list_default.csv")
    gpu = pods.num_gpu * pods.gpu_milli  # milli-GPU: 8 cores (8000 milli-CPU) and 32 GiB per GPU
    demands = make_requests(pods.names, 8 * gpu, 32 * gpu * 1024 // 1000, pods.num_gpu, pods.gpu_milli)
    runtimes = pd.read_csv(DATA / "philly" / "philly_runtime_from_alibaba_v2020_analysis.csv")["runtime"].to_numpy()
    return cluster, synthetic_trace(n_jobs, runtimes.astype(float), demands, cluster, load=load, seed=seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--load", type=float, default=2.0, help="offered GPU-seconds per second / capacity")
    ap.add_argument("--write", action="store_true", help="write the section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    cluster, trace = build(args.jobs, args.nodes, args.seed, args.load)
    load_before = os.getloadavg()
    rows = []
    for placement in ("fgd", "first_fit"):
        t0 = time.perf_counter()
        res = simulate(cluster, trace, "fifo", placement, seed=args.seed)
        dt = time.perf_counter() - t0
        s = res.summary()
        rows.append([f"fifo + {placement}", f"{dt:.1f}", fmt_int(args.jobs / dt), f"{s['queue_delay_p90_s']:.0f}",
                     f"{100 * s['mean_allocation_ratio']:.1f}%", f"{100 * s['mean_fragmentation_ratio']:.1f}%",
                     "yes" if dt < 10 else "no"])
        print(rows[-1], flush=True)
    load_after = os.getloadavg()
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (machine shared with other jobs)"
    print(load)
    if args.write:
        write_section("simulator", [
            "### What-if simulator (`bench/simulator_speed.py`)",
            "",
            f"{args.jobs:,} synthetic jobs (Philly run times, openb GPU requests, Poisson arrivals offering "
            f"{args.load:g}× the GPU capacity in mean GPU-seconds, most of them in a few very long jobs) on "
            f"{args.nodes:,} openb GPU nodes ({cluster.total_gpu_milli // 1000:,} GPUs), "
            "FIFO queue; every arrival and completion is an event, and each scheduling attempt scores the "
            "nodes that changed since the last job of the same request class. Target: the whole trace in "
            "under 10 s with fragmentation-aware placement; first-fit in the same run is the reference.",
            "",
            *header([("numpy", package_version("numpy")), ("pandas", package_version("pandas"))]),
            f"- {load}",
            "",
            *table(["run", "seconds", "jobs/s", "p90 queueing delay (s)", "mean allocation", "mean fragmentation",
                    "under 10 s"], rows),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
