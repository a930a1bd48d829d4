"""A real Prometheus scraping, every second, a dcgm-exporter stand-in (an HTTP server printing
dcgm-exporter 3.x's exact text: names, HELP/TYPE lines, labels) and a real node_exporter."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import binary, free_port

NODE = os.uname().nodename  # node_exporter's node_uname_info nodename: both exporters name one node
DRIVER = "550.54.15"
MODEL = "NVIDIA H100 80GB HBM3"
UUIDS = ("GPU-5d6a4c6e-9f1b-2e3a-8c7d-0a1b2c3d4e5f", "GPU-8b3f1e2d-4c5a-6b7c-9d0e-1f2a3b4c5d6e")

# (metric, type, help, value for GPU 0, value for GPU 1): help texts as in dcgm-exporter's CSVs.
STATIC = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", 1980, 1755),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", 2619, 2619),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", 48, 51),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", 41, 44),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", 312.5, 98.25),
    ("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "counter", "Total number of bytes transmitted through PCIe TX (in KB) via NVML.",
     999, 999),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", 3, 0),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", 37, 0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", 12, 0),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", 79000, 80500),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", 2024, 524),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", 535, 535),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "Total number of NVLink bandwidth counters for all lanes.",
     1234, 0),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors", 0, 1),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors", 2, 0),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", 0, 1),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", 0.912, 0.0),
    ("DCGM_FI_PROF_SM_ACTIVE", "gauge", "The ratio of cycles an SM has at least 1 warp assigned.", 0.85, 0.0),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "gauge", "The ratio of number of warps resident on an SM.", 0.41, 0.0),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active.", 0.55, 0.0),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge",
     "Ratio of cycles the device memory interface is active sending or receiving data.", 0.3, 0.0),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "The rate of data transmitted over the PCIe bus - including both "
     "protocol headers and data payloads - in bytes per second.", 1500000000, 2048),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "The rate of data received over the PCIe bus - including both "
     "protocol headers and data payloads - in bytes per second.", 250000000, 1024),
]
ENERGY_HELP = "Total energy consumption since boot (in mJ)."
XID_HELP = "Value of the last XID error encountered."


@dataclass
class FakeDcgm:
    """What the stand-in serves. ``energy_mj`` grows by 300 J per scrape; ``xid`` is GPU 1's gauge."""

    scrapes: int = 0
    xid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self) -> str:
        with self.lock:
            self.scrapes += 1
            n, xid = self.scrapes, self.xid
        out: list[str] = []

        def family(name: str, kind: str, help_: str, values: tuple[float, float]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for i, v in enumerate(values):
                labels = (f'gpu="{i}",UUID="{UUIDS[i]}",device="nvidia{i}",modelName="{MODEL}",'
                          f'Hostname="{NODE}",DCGM_FI_DRIVER_VERSION="{DRIVER}"')
                out.append(f"{name}{{{labels}}} {v:g}" if isinstance(v, float) else f"{name}{{{labels}}} {v}")

        for name, kind, help_, v0, v1 in STATIC[:5]:
            family(name, kind, help_, (v0, v1))
        family("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", ENERGY_HELP,
               (1_000_000_000 + 300_000 * n, 2_000_000_000 + 90_000 * n))
        for name, kind, help_, v0, v1 in STATIC[5:9]:
            family(name, kind, help_, (v0, v1))
        family("DCGM_FI_DEV_XID_ERRORS", "gauge", XID_HELP, (0, xid))
        for name, kind, help_, v0, v1 in STATIC[9:]:
            family(name, kind, help_, (v0, v1))
        return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDcgm

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.fake.text().encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@dataclass
class Stack:
    url: str
    fake: FakeDcgm
    dcgm_instance: str
    node_instance: str
    started: float

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    def value_at(self, promql: str, at: float) -> float:
        (result,) = self.query(promql, at)
        return float(result["value"][1])

    def wait_for(self, promql: str, n: int, timeout: float = 30.0) -> None:
        """Poll until the instant query ``promql`` returns ``n`` (a count) or more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                if result and float(result[0]["value"][1]) >= n:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never had {n} for {promql}")


def start_stack(tmp: Path) -> Iterator[Stack]:
    prometheus = binary("prometheus")
    node_exporter = binary("prometheus-node-exporter")
    fake = FakeDcgm()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = fake  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dcgm_instance = f"127.0.0.1:{server.server_address[1]}"
    node_instance = f"127.0.0.1:{free_port()}"
    node = subprocess.Popen([node_exporter, f"--web.listen-address={node_instance}", "--collector.disable-defaults",
                             "--collector.netdev", "--collector.netclass", "--collector.diskstats",
                             "--collector.filesystem", "--collector.uname", "--collector.loadavg",
                             "--collector.meminfo"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom_port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n"
                      f"  - job_name: dcgm\n    static_configs:\n      - targets: ['{dcgm_instance}']\n"
                      f"  - job_name: node\n    static_configs:\n      - targets: ['{node_instance}']\n")
    started = time.time()
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Stack(f"http://127.0.0.1:{prom_port}", fake, dcgm_instance, node_instance, started)
    finally:
        for proc in (prom, node):
            proc.terminate()
        for proc in (prom, node):
            proc.wait(timeout=30)
        server.shutdown()
