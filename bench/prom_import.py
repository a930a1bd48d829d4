"""Prometheus import throughput: samples per second of ``gpufleet import prometheus`` side by side
with a plain ``query_range`` fetch of the same series through ``requests``.

A dcgm-exporter and node_exporter history (``--nodes`` × 8 H100s, every mapped dcgm-exporter field
plus a node's network, disk, filesystem and load series, one point per ``--step`` over ``--hours``)
is backfilled into a fresh TSDB with ``promtool tsdb create-blocks-from openmetrics`` and served by
a real Prometheus. Then, alternating, in the same run:

- plain fetch: the importer's own queries (same selector, chunks, step), ``requests`` + ``.json()``;
- import: ``PrometheusImporter.import_range`` into a fresh SQLite store (schema made beforehand):
  the fetch through prometheus-api-client's session (the next chunks asked for while one is
  written), decoding (msgspec where installed, else the standard library), mapping, unit
  conversion, counter rates, dedupe and the write path's commit.

Samples are Prometheus points (one value of one series at one time). ``--write`` replaces the
``prom_import`` section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from agent_cost import wait_http
from perfdoc import fmt_int, free_port, fs_type, header, median, package_version, scratch_base, table, write_section

from collectors import dcgm
from db.engine import make_engine, upgrade
from gpufleet.promimport import MAX_STEPS, POINT_BUDGET, PrometheusImporter, chunk_bounds
from gpufleet.promsource import SELECTOR, PromSource

TARGET_RATIO = 0.80
GPU_METRICS = [f for f in dcgm.FIELDS if f.kind == "gpu" and f.metric not in dcgm.FALLBACKS]
NODE_SERIES = [  # (metric, labels, value at step i): one NIC, one disk, one filesystem, load
    ("node_network_receive_bytes_total", 'device="eth0"', lambda i: 10_000_000 + 1_250_000 * i),
    ("node_network_transmit_bytes_total", 'device="eth0"', lambda i: 20_000_000 + 625_000 * i),
    ("node_network_up", 'device="eth0"', lambda i: 1),
    ("node_network_speed_bytes", 'device="eth0"', lambda i: 12_500_000_000),
    ("node_disk_read_bytes_total", 'device="nvme0n1"', lambda i: 4096 * 300 * i),
    ("node_disk_written_bytes_total", 'device="nvme0n1"', lambda i: 4096 * 900 * i),
    ("node_disk_io_time_seconds_total", 'device="nvme0n1"', lambda i: 0.4 * i),
    ("node_filesystem_size_bytes", 'device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"', lambda i: 2 * 10**12),
    ("node_filesystem_avail_bytes", 'device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"',
     lambda i: 10**12 - 4096 * i),
    ("node_load1", "", lambda i: 3.5),
]


def openmetrics(path: Path, nodes: int, start: int, points: int, step: int) -> int:
    """Write the history as OpenMetrics text, time-major; returns the number of series."""
    rng = random.Random(1)
    gpus = [(n, g, f"GPU-{n:04d}{g:04d}-0000-4000-8000-{rng.getrandbits(48):012x}") for n in range(nodes)
            for g in range(8)]
    gpu_labels = [f'gpu="{g}",UUID="{uuid}",device="nvidia{g}",modelName="NVIDIA H100 80GB HBM3",'
                  f'Hostname="node-{n:03d}",DCGM_FI_DRIVER_VERSION="550.54.15",'
                  f'instance="10.0.{n // 250}.{n % 250}:9400",job="dcgm"' for n, g, uuid in gpus]
    with path.open("w") as out:
        for i in range(points):
            ts = start + i * step
            lines = []
            for labels in gpu_labels:
                for f in GPU_METRICS:
                    value = i * 300_000 if f.metric == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" else (i * 7) % 100
                    lines.append(f"{f.metric}{{{labels}}} {value} {ts}\n")
                lines.append(f"{dcgm.XID_METRIC}{{{labels}}} 0 {ts}\n")
            for n in range(nodes):
                inst = f'instance="10.0.{n // 250}.{n % 250}:9100",job="node"'
                lines.append(f'{dcgm.UNAME_METRIC}{{nodename="node-{n:03d}",{inst}}} 1 {ts}\n')
                for metric, labels, value in NODE_SERIES:
                    lines.append(f"{metric}{{{labels + ',' if labels else ''}{inst}}} {value(i)} {ts}\n")
            out.writelines(lines)
        out.write("# EOF\n")
    return len(gpu_labels) * (len(GPU_METRICS) + 1) + nodes * (len(NODE_SERIES) + 1)


def start_prometheus(tsdb: Path, port: int) -> subprocess.Popen[bytes]:
    config = tsdb.parent / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc, timeout=60)
    except RuntimeError as exc:
        proc.terminate()
        raise SystemExit(f"Prometheus did not become ready: {exc}") from None
    return proc


def plain_fetch(url: str, first: int, last: int, step: int, series: int) -> tuple[int, float]:
    """The reference: the importer's queries through plain requests, the JSON decoded, nothing else;
    with the cyclic GC paused as the importer pauses it, so the reference is the fastest plain fetch."""
    steps = max(1, min(MAX_STEPS, POINT_BUDGET // series))
    t0 = time.perf_counter()
    points = 0
    gc.disable()
    try:
        with requests.Session() as session:
            for a, b in chunk_bounds(first, last, step, steps):
                r = session.post(f"{url}/api/v1/query_range",
                                 data={"query": SELECTOR, "start": a - step, "end": b, "step": step}, timeout=300)
                r.raise_for_status()
                points += sum(len(s["values"]) for s in r.json()["data"]["result"])
    finally:
        gc.enable()
    return points, time.perf_counter() - t0


def run_import(url: str, store: Path, first: int, last: int, step: int) -> tuple[int, float, int]:
    store.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{store}")
    upgrade(engine)
    source = PromSource(url)
    t0 = time.perf_counter()
    stats = PrometheusImporter(engine, source, step).import_range(first, last)
    elapsed = time.perf_counter() - t0
    source.close()
    engine.dispose()
    return stats.points, elapsed, sum(stats.rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4, help="nodes of 8 GPUs (default 4)")
    ap.add_argument("--hours", type=float, default=4.0, help="history length (default 4)")
    ap.add_argument("--step", type=int, default=15, help="seconds between points (default 15)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of each, after one warm-up")
    ap.add_argument("--dir", help="scratch folder (default: the temp dir unless it is tmpfs)")
    ap.add_argument("--write", action="store_true", help="replace the prom_import section of docs/PERFORMANCE.md")
    args = ap.parse_args()
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian package prometheus)")

    work = Path(tempfile.mkdtemp(prefix="gpufleet-prom-import-", dir=scratch_base(args.dir)))
    points = int(args.hours * 3600 / args.step)
    end = int(time.time() // 7200 * 7200 - 7200)  # whole blocks in the past
    start = end - points * args.step
    t0 = time.perf_counter()
    series = openmetrics(work / "history.om", args.nodes, start, points, args.step)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(work / "history.om"),
                    str(work / "tsdb")], check=True, stdout=subprocess.DEVNULL)
    print(f"backfilled {series:,} series x {points:,} points in {time.perf_counter() - t0:.0f} s")
    port = free_port()
    prom = start_prometheus(work / "tsdb", port)
    url = f"http://127.0.0.1:{port}"
    first, last = start + args.step, end - args.step  # inside the data, so every query point has a value
    try:
        fetch_rates, import_rates, sizes = [], [], set()
        for rep in range(args.reps + 1):
            fetched, fetch_s = plain_fetch(url, first, last, args.step, series)
            imported, import_s, rows = run_import(url, work / "store.db", first, last, args.step)
            sizes.add((fetched, imported, rows))
            print(f"rep {rep}: plain fetch {fetched / fetch_s:,.0f}/s, import {imported / import_s:,.0f}/s "
                  f"({rows:,} rows)")
            if rep:  # the first is a warm-up (page cache, Prometheus' chunk cache)
                fetch_rates.append(fetched / fetch_s)
                import_rates.append(imported / import_s)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    assert len(sizes) == 1, f"runs differ: {sizes}"
    (fetched, imported, rows), = sizes
    assert fetched == imported, (fetched, imported)
    fetch, imp = median(fetch_rates), median(import_rates)
    ratio = imp / fetch
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    rows_out = [("plain `query_range` fetch (requests + JSON)", fmt_int(fetched), fmt_int(fetch), "100%"),
                ("`gpufleet import prometheus` (SQLite)", fmt_int(imported), fmt_int(imp), f"{ratio:.0%}")]
    lines = [
        "### Prometheus import: samples per second",
        "",
        *header([("Prometheus", _prom_version()), ("prometheus-api-client", package_version("prometheus-api-client")),
                 ("requests", package_version("requests")), ("msgspec", package_version("msgspec"))]),
        f"- data: {args.nodes} nodes × 8 H100s, {len(GPU_METRICS) + 1} dcgm-exporter series per GPU and "
        f"{len(NODE_SERIES) + 1} node_exporter series per node ({series:,} series), {points:,} points each "
        f"({args.hours:g} h at {args.step} s), backfilled with promtool; Prometheus on the same machine",
        f"- store: SQLite on {fs_type(work.parent)}, fresh each run; {fmt_int(rows)} sample rows per import",
        f"- plain fetch decodes with requests' `.json()`, which uses {requests.compat.json.__name__} here",
        f"- {args.reps} timed repetitions after one warm-up, alternating; medians shown",
        "",
        *table(["path", "samples", "samples/s", "of plain fetch"], rows_out),
        "",
        f"Target (issue): import ≥ {TARGET_RATIO:.0%} of the plain fetch: {verdict} ({ratio:.0%}).",
    ]
    print("\n".join(lines))
    if args.write:
        write_section("prom_import", lines)


def _prom_version() -> str:
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout + "x"
    return out.split()[2] if len(out.split()) > 2 else "unknown"


if __name__ == "__main__":
    main()
