"""The agent's Prometheus ``/metrics``: a custom collector over the latest collection.

Names follow Prometheus conventions (prefix ``gpufleet_``, base units in the name, ``_total`` on
counters) and labels stay low-cardinality: ``node``, ``gpu`` (index), ``uuid``, ``model``.
A scrape only formats what the last cycle collected; it never calls NVML.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from agent.scrape_auth import BasicAuthCheck
from collectors.nvml import CLOCK_EVENT_REASONS
from collectors.records import Sample

log = logging.getLogger(__name__)

# (metric name, sample column, counter?, help). Every column of a sample kind that a user would
# graph or alert on is here.
GPU_METRICS = [
    ("gpu_utilization_ratio", "utilization_gpu_ratio", False, "Fraction of time a kernel was running"),
    ("gpu_memory_utilization_ratio", "utilization_memory_ratio", False,
     "Fraction of time device memory was read or written"),
    ("gpu_memory_used_bytes", "memory_used_bytes", False, "Device memory in use"),
    ("gpu_memory_free_bytes", "memory_free_bytes", False, "Device memory free"),
    ("gpu_memory_total_bytes", "memory_total_bytes", False, "Device memory total"),
    ("gpu_temperature_celsius", "temperature_gpu_celsius", False, "GPU core temperature"),
    ("gpu_memory_temperature_celsius", "temperature_memory_celsius", False, "HBM temperature"),
    ("gpu_power_watts", "power_watts", False, "Power draw"),
    ("gpu_power_limit_watts", "power_limit_watts", False, "Enforced power limit"),
    ("gpu_energy_joules_total", "energy_joules_total", True, "Energy consumed since the driver loaded"),
    ("gpu_sm_clock_hertz", "sm_clock_hz", False, "SM clock"),
    ("gpu_memory_clock_hertz", "mem_clock_hz", False, "Memory clock"),
    ("gpu_sm_clock_max_hertz", "sm_clock_max_hz", False, "Maximum SM clock"),
    ("gpu_memory_clock_max_hertz", "mem_clock_max_hz", False, "Maximum memory clock"),
    ("gpu_performance_state", "performance_state", False, "Performance state (0 = P0, fastest)"),
    ("gpu_fan_speed_ratio", "fan_speed_ratio", False, "Fan speed as a fraction of its maximum"),
    ("gpu_pcie_tx_bytes_per_second", "pcie_tx_bytes_per_second", False, "PCIe transmit throughput"),
    ("gpu_pcie_rx_bytes_per_second", "pcie_rx_bytes_per_second", False, "PCIe receive throughput"),
    ("gpu_pcie_replays_total", "pcie_replay_total", True, "PCIe replay counter"),
    ("gpu_pcie_link_generation", "pcie_link_gen", False, "Current PCIe link generation"),
    ("gpu_pcie_link_generation_max", "pcie_link_gen_max", False, "Maximum PCIe link generation"),
    ("gpu_pcie_link_width", "pcie_link_width", False, "Current PCIe link width (lanes)"),
    ("gpu_pcie_link_width_max", "pcie_link_width_max", False, "Maximum PCIe link width (lanes)"),
    ("gpu_nvlink_links_active", "nvlink_links_active", False, "NVLink links up"),
    ("gpu_nvlink_tx_bytes_total", "nvlink_tx_bytes_total", True, "NVLink data transmitted"),
    ("gpu_nvlink_rx_bytes_total", "nvlink_rx_bytes_total", True, "NVLink data received"),
    ("gpu_nvlink_errors_total", "nvlink_errors_total", True, "NVLink CRC, replay and recovery errors"),
    ("gpu_retired_pages_sbe", "retired_pages_sbe", False, "Pages retired for repeated single-bit errors"),
    ("gpu_retired_pages_dbe", "retired_pages_dbe", False, "Pages retired for double-bit errors"),
    ("gpu_remapped_rows_correctable", "remapped_rows_correctable", False, "Rows remapped (correctable)"),
    ("gpu_remapped_rows_uncorrectable", "remapped_rows_uncorrectable", False, "Rows remapped (uncorrectable)"),
    ("gpu_remap_pending", "remapped_rows_pending", False, "1 when a row remap waits for a GPU reset"),
    ("gpu_remap_failure", "remapped_rows_failure", False, "1 when row remapping failed"),
    ("gpu_processes", "process_count", False, "Compute processes on the GPU"),
    ("gpu_mig_mode", "mig_mode", False, "1 when MIG mode is enabled"),
]
ECC = [("corrected", "volatile", "ecc_corrected_volatile_total"),
       ("uncorrected", "volatile", "ecc_uncorrected_volatile_total"),
       ("corrected", "aggregate", "ecc_corrected_aggregate_total"),
       ("uncorrected", "aggregate", "ecc_uncorrected_aggregate_total")]
HOST_METRICS = [
    ("node_cpu_utilization_ratio", "cpu_utilization_ratio", False, "CPU busy fraction"),
    ("node_cpus", "cpu_count", False, "Logical CPUs"),
    ("node_load1", "load1", False, "1-minute load average"),
    ("node_load5", "load5", False, "5-minute load average"),
    ("node_load15", "load15", False, "15-minute load average"),
    ("node_memory_total_bytes", "memory_total_bytes", False, "Physical memory"),
    ("node_memory_available_bytes", "memory_available_bytes", False, "Memory available to applications"),
    ("node_memory_used_bytes", "memory_used_bytes", False, "Memory used"),
    ("node_swap_used_bytes", "swap_used_bytes", False, "Swap used"),
    ("node_uptime_seconds", "uptime_seconds", False, "Seconds since boot"),
    ("node_processes", "processes", False, "Processes"),
]
INTERFACE_METRICS = [
    ("network_receive_bytes_total", "rx_bytes_total", True, "Bytes received"),
    ("network_transmit_bytes_total", "tx_bytes_total", True, "Bytes transmitted"),
    ("network_receive_packets_total", "rx_packets_total", True, "Packets received"),
    ("network_transmit_packets_total", "tx_packets_total", True, "Packets transmitted"),
    ("network_receive_errors_total", "rx_errors_total", True, "Receive errors"),
    ("network_transmit_errors_total", "tx_errors_total", True, "Transmit errors"),
    ("network_receive_drops_total", "rx_drops_total", True, "Received packets dropped"),
    ("network_transmit_drops_total", "tx_drops_total", True, "Transmitted packets dropped"),
    ("network_carrier_changes_total", "carrier_changes_total", True, "Link carrier changes"),
    ("network_up", "up", False, "1 when the link is up"),
]
DISK_METRICS = [
    ("disk_reads_completed_total", "reads_total", True, "Reads completed"),
    ("disk_writes_completed_total", "writes_total", True, "Writes completed"),
    ("disk_read_bytes_total", "read_bytes_total", True, "Bytes read"),
    ("disk_written_bytes_total", "write_bytes_total", True, "Bytes written"),
    ("disk_io_time_seconds_total", "io_seconds_total", True, "Seconds spent doing I/O"),
    ("disk_utilization_ratio", "utilization_ratio", False, "Fraction of time the device was busy"),
    ("disk_io_now", "queue_depth", False, "I/Os in flight"),
]
FILESYSTEM_METRICS = [
    ("filesystem_size_bytes", "size_bytes", False, "Filesystem size"),
    ("filesystem_free_bytes", "free_bytes", False, "Filesystem free space"),
    ("filesystem_avail_bytes", "avail_bytes", False, "Filesystem space available to non-root users"),
]


def _family(name: str, counter: bool, help_text: str, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if counter else GaugeMetricFamily
    return cls(f"gpufleet_{name}", help_text, labels=labels)


def _table(specs: list[tuple[str, str, bool, str]], rows: list[tuple[list[str], dict[str, Any]]],
           labels: list[str]) -> Iterator[Metric]:
    for name, column, counter, help_text in specs:
        fam = _family(name, counter, help_text, labels)
        for label_values, values in rows:
            v = values.get(column)
            if isinstance(v, int | float):
                fam.add_metric(label_values, float(v))
        if fam.samples:
            yield fam


class SnapshotCollector:
    """prometheus_client collector over ``agent.loop.Snapshot`` and agent state."""

    def __init__(self, agent: Any, node: str) -> None:
        self.agent = agent
        self.node = node

    def describe(self) -> list[Metric]:
        return []  # no describe-time collection, so registering does not scrape

    def collect(self) -> Iterator[Metric]:
        snap = self.agent.snapshot
        node = self.node
        by_kind: dict[str, list[Sample]] = {}
        for s in snap.samples:
            by_kind.setdefault(s.kind, []).append(s)
        gpu_labels = ["node", "gpu", "uuid", "model"]
        gpu_rows = []
        for s in by_kind.get("gpu", []):
            idx = s.key["gpu_index"]
            info = snap.gpus.get(idx)
            gpu_rows.append(([node, str(idx), s.key["gpu_uuid"], (info.model if info else None) or ""], s.values))
        up = GaugeMetricFamily("gpufleet_gpu_up", "1 when NVML answers for the GPU, 0 when lost or failing",
                               labels=gpu_labels)
        for lv, values in gpu_rows:
            up.add_metric(lv, 1.0 if values.get("status") == "ok" else 0.0)
        yield up
        yield from _table(GPU_METRICS, gpu_rows, gpu_labels)
        ecc = CounterMetricFamily("gpufleet_gpu_ecc_errors_total", "ECC errors by type and counter",
                                  labels=[*gpu_labels, "type", "counter"])
        reasons = GaugeMetricFamily("gpufleet_gpu_clock_event_reason",
                                    "1 while the clock-event (throttle) reason is active",
                                    labels=[*gpu_labels, "reason"])
        for lv, values in gpu_rows:
            for etype, counter, column in ECC:
                count = values.get(column)
                if isinstance(count, int | float):
                    ecc.add_metric([*lv, etype, counter], float(count))
            mask = values.get("clock_event_reasons")
            if isinstance(mask, int):
                for bit, reason in CLOCK_EVENT_REASONS.items():
                    reasons.add_metric([*lv, reason], 1.0 if mask & bit else 0.0)
        yield ecc
        yield reasons
        xids = CounterMetricFamily("gpufleet_gpu_xid_errors_total", "XID errors seen since the agent started",
                                   labels=["node", "gpu", "uuid", "xid"])
        events = CounterMetricFamily("gpufleet_events_total", "Events recorded since the agent started",
                                     labels=["node", "kind"])
        per_kind: dict[str, int] = {}
        for (kind, code, gpu, uuid), n in sorted(snap.event_counts.items(), key=str):
            per_kind[kind] = per_kind.get(kind, 0) + n
            if kind == "xid":
                xids.add_metric([node, "" if gpu is None else str(gpu), uuid or "", str(code)], float(n))
        for kind, n in sorted(per_kind.items()):
            events.add_metric([node, kind], float(n))
        yield xids
        yield events
        host = [([node], s.values) for s in by_kind.get("host", [])]
        yield from _table(HOST_METRICS, host, ["node"])
        ifaces = [([node, s.key["interface"]], s.values) for s in by_kind.get("interface", [])]
        yield from _table(INTERFACE_METRICS, ifaces, ["node", "interface"])
        speed = GaugeMetricFamily("gpufleet_network_speed_bytes", "Link speed in bytes per second",
                                  labels=["node", "interface"])
        for lv, values in ifaces:
            bits = values.get("speed_bits_per_second")
            if isinstance(bits, int | float):
                speed.add_metric(lv, float(bits) / 8)
        yield speed
        disks = [([node, s.key["device"]], s.values) for s in by_kind.get("disk", [])]
        yield from _table(DISK_METRICS, disks, ["node", "device"])
        fss = [([node, s.key["path"], str(s.values.get("device") or ""), str(s.values.get("fstype") or "")],
                s.values) for s in by_kind.get("filesystem", [])]
        yield from _table(FILESYSTEM_METRICS, fss, ["node", "mountpoint", "device", "fstype"])
        yield from self._agent_metrics(snap)

    def _agent_metrics(self, snap: Any) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily("gpufleet_agent_info", "Agent version", labels=["node", "version"])
        info.add_metric([node, self.agent.node.get("agent_version") or ""], 1.0)
        yield info
        cup = GaugeMetricFamily("gpufleet_agent_collector_up", "1 when the collector's last run succeeded",
                                labels=["node", "collector"])
        cfail = GaugeMetricFamily("gpufleet_agent_collector_consecutive_failures",
                                  "Failures of the collector since its last success", labels=["node", "collector"])
        for name, h in sorted(snap.collectors.items()):
            cup.add_metric([node, name], 1.0 if h["status"] == "ok" else 0.0)
            cfail.add_metric([node, name], float(h["failures"]))
        yield cup
        yield cfail
        gauges: list[tuple[str, str, Callable[[], float | None]]] = [
            ("agent_last_collection_timestamp_seconds", "When the last collection ran", lambda: snap.ts or None),
            ("agent_collection_duration_seconds", "Wall time of the last collection", lambda: snap.cycle_seconds),
            ("agent_spool_batches", "Batches waiting in the spool", lambda: float(len(self.agent.spool.pending()))),
        ]
        store = self.agent.store
        if store is not None:
            gauges.append(("agent_store_consecutive_failures", "Failed store writes since the last success",
                           lambda: float(store.failures)))
        for name, help_text, get in gauges:
            value = get()
            if value is not None:
                fam = GaugeMetricFamily(f"gpufleet_{name}", help_text, labels=["node"])
                fam.add_metric([node], float(value))
                yield fam
        counters = [("agent_spool_dropped_batches_total", "Batches dropped because the spool was full",
                     float(self.agent.spool.dropped))]
        if store is not None:
            counters.append(("agent_batches_written_total", "Batches committed to the store",
                             float(store.written_batches)))
        for name, help_text, value in counters:
            cfam = CounterMetricFamily(f"gpufleet_{name}", help_text, labels=["node"])
            cfam.add_metric([node], value)
            yield cfam


def make_registry(agent: Any, node: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(agent, node))  # type: ignore[arg-type]
    return registry


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def render_text(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, byte for byte what ``generate_latest`` writes
    (a test holds it to that) at a third of the CPU: the same label sets recur in every GPU family,
    so each is formatted once."""
    out: list[str] = []
    labelsets: dict[tuple[tuple[str, str], ...], str] = {}
    for fam in registry.collect():
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        doc = fam.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {fam.type}\n")
        for sample in fam.samples:
            text = ""
            if sample.labels:
                key = tuple(sorted(sample.labels.items()))
                text = labelsets.get(key) or labelsets.setdefault(
                    key, "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in key) + "}")
            out.append(f"{sample.name}{text} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


class MetricsServer:
    """``/metrics`` over HTTP in the Prometheus text format (0.0.4).

    The page is rendered once per collection and served from memory to every scraper until the
    next one: a scrape costs a memory copy, however many Prometheus servers (HA pairs) ask. The
    text format is served rather than OpenMetrics because it renders at a fraction of the CPU and
    every Prometheus reads it.
    """

    def __init__(self, agent: Any, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 auth: BasicAuthCheck | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        registry = make_registry(agent, agent.node["name"])
        lock = threading.Lock()
        cache: dict[str, Any] = {"ts": None, "body": b""}

        def body() -> bytes:
            with lock:
                ts = agent.snapshot.ts  # agent counters (spool, store) refresh with it, once a cycle
                if cache["ts"] != ts:
                    cache["body"], cache["ts"] = render_text(registry), ts
                return bytes(cache["body"])

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a client that stalls (in the TLS handshake too) is dropped, not waited for

            def setup(self) -> None:
                super().setup()
                if isinstance(self.request, ssl.SSLSocket):  # handshake in this thread, not in accept()
                    self.request.do_handshake()

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if auth is not None and not auth.check(self.headers.get("Authorization")):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="gpufleet metrics", charset="UTF-8"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                payload = body()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not news
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A failed handshake or a dropped scraper is the client's problem: one debug line, no traceback.
                log.debug("/metrics request from %s failed", client_address[0], exc_info=True)

        self.httpd = Server((host, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.httpd.daemon_threads = True
        self.server_port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
