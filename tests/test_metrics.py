"""``/metrics``: valid exposition (promtool), and a real Prometheus scraping a real agent."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from agent.daemon import build_agent, serve_metrics
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.host import HostCollector
from collectors.network import NetworkCollector
from collectors.nvml import NvmlCollector
from collectors.storage import StorageCollector
from tests.conftest import binary, free_port


@pytest.fixture
def live_agent(tmp_path: Path):
    port = free_port()
    cfg = AgentConfig(db_url=f"sqlite:///{tmp_path / 's.db'}", interval=0.5, node_name="metrics-node",
                      metrics_addr=f"127.0.0.1:{port}", spool_dir=str(tmp_path / "spool"))
    fake = FakeNVML(load_scenario("healthy"), node_name="metrics-node")
    agent = build_agent(cfg, collectors=[NvmlCollector(fake), HostCollector(), NetworkCollector(),
                                         StorageCollector()])
    server = serve_metrics(agent, cfg.metrics_addr)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not agent.snapshot.samples and time.monotonic() < deadline:
        time.sleep(0.05)
    yield agent, port
    agent.stop()
    thread.join(timeout=20)
    server.shutdown()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_exposition_names_units_and_labels(live_agent) -> None:
    agent, port = live_agent
    families = {f.name: f for f in text_string_to_metric_families(scrape(port))}
    assert all(name.startswith("gpufleet_") or name.startswith(("python_", "process_")) for name in families)
    power = families["gpufleet_gpu_power_watts"]
    assert {s.labels["gpu"] for s in power.samples} == {str(i) for i in agent.snapshot.gpus}
    assert set(power.samples[0].labels) == {"node", "gpu", "uuid", "model"}
    assert families["gpufleet_gpu_energy_joules"].type == "counter"
    gpu = agent.snapshot.samples[0]
    total = next(s for s in families["gpufleet_gpu_memory_total_bytes"].samples
                 if s.labels["uuid"] == gpu.key["gpu_uuid"])
    assert total.value == gpu.values["memory_total_bytes"]  # bytes, not MiB
    assert "gpufleet_node_memory_total_bytes" in families
    assert "gpufleet_agent_collector_up" in families


def test_promtool_check_metrics_passes(live_agent) -> None:
    _agent, port = live_agent
    promtool = binary("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=scrape(port), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""  # no lint warnings either


def test_real_prometheus_scrapes_the_agent(live_agent, tmp_path: Path) -> None:
    agent, port = live_agent
    prometheus = binary("prometheus")
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: gpufleet\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n")
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        query = urllib.parse.urlencode({"query": "gpufleet_gpu_memory_total_bytes"})
        result: list = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(result) < len(agent.snapshot.gpus):
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{query}", timeout=5) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                continue
        expected = {g.uuid: g.memory_total_bytes for g in agent.snapshot.gpus.values()}
        got = {r["metric"]["uuid"]: float(r["value"][1]) for r in result}
        assert got == expected
        assert all(r["metric"]["node"] == "metrics-node" and r["metric"]["job"] == "gpufleet" for r in result)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_fast_renderer_writes_exactly_what_prometheus_client_writes(live_agent) -> None:
    from prometheus_client.exposition import generate_latest

    from agent.exporter import make_registry, render_text

    agent, _port = live_agent
    registry = make_registry(agent, 'node "quoted" \\ name\nwith newline')
    assert render_text(registry) == generate_latest(registry)
