"""The agent's Prometheus ``/metrics``: a custom collector over the latest collection.

Names follow Prometheus conventions (prefix ``gpufleet_``, base units in the name, ``_total`` on
counters) and labels stay low-cardinality: ``node``, ``gpu`` (index), ``uuid``, ``model``.
A scrape only formats what the last cycle collected; it never calls NVML.
"""

from __future__ import annotations

import logging
import math
import queue
import ssl
import threading
from collections.abc import Iterator
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


class Labels:
    """One label set: its values (in the order of the family's sorted label names) and its text,
    ``{a="x",b="y"}``, escaped once however many families and scrapes repeat it."""

    __slots__ = ("values", "text")

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        self.values = values
        self.text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values, strict=True)) + "}"


# One family of the exposition: name (counters without ``_total``), counter?, help, label names
# (sorted, as the text format writes them), and its rows (label set, value).
Row = tuple[Labels, float]
Family = tuple[str, bool, str, tuple[str, ...], list[Row]]

GPU_LABELS = ("gpu", "model", "node", "uuid")
ECC_LABELS = ("counter", "gpu", "model", "node", "type", "uuid")
REASON_LABELS = ("gpu", "model", "node", "reason", "uuid")
_NUMBER = (int, float)  # a tuple: isinstance is faster with one than with the union int | float
_CACHE_LIMIT = 4096  # label sets and formatted values kept between scrapes; cleared when exceeded


def _family_name(name: str, counter: bool) -> str:
    """``gpufleet_<name>``; a counter's family name without ``_total`` (its samples add it back)."""
    full = f"gpufleet_{name}"
    return full.removesuffix("_total") if counter else full


def _table(specs: list[tuple[str, str, bool, str]], labels: tuple[str, ...],
           rows: list[tuple[Labels, dict[str, Any]]]) -> Iterator[Family]:
    """One family per spec (family name, column, counter?, help: ``_named``) over the rows that have a
    number in its column; empty ones are left out."""
    for name, column, counter, help_text in specs:
        out = [(lab, v) for lab, values in rows if isinstance(v := values.get(column), _NUMBER)]
        if out:
            yield name, counter, help_text, labels, out


def _named(specs: list[tuple[str, str, bool, str]]) -> list[tuple[str, str, bool, str]]:
    """The specs with each metric name made its family name, once at import."""
    return [(_family_name(name, counter), column, counter, help_text) for name, column, counter, help_text in specs]


_GPU_FAMILIES, _HOST_FAMILIES, _INTERFACE_FAMILIES, _DISK_FAMILIES, _FILESYSTEM_FAMILIES = map(
    _named, (GPU_METRICS, HOST_METRICS, INTERFACE_METRICS, DISK_METRICS, FILESYSTEM_METRICS))


class SnapshotCollector:
    """The exposition of ``agent.loop.Snapshot`` and agent state, as plain families.

    ``collect()`` hands them to prometheus_client as metric objects; ``render()`` writes the text
    format from them directly (what every scrape of a new snapshot costs), byte for byte what
    prometheus_client writes from ``collect()`` (a test holds it to that)."""

    def __init__(self, agent: Any, node: str) -> None:
        self.agent = agent
        self.node = node
        self._labelsets: dict[tuple[tuple[str, ...], tuple[str, ...]], Labels] = {}
        self._numbers: dict[float, str] = {}
        self._heads: dict[tuple[str, bool, str], tuple[str, str]] = {}  # family → (sample name, HELP + TYPE)
        self._per_gpu: dict[tuple[str, str, str], tuple[list[tuple[Labels, str]], list[tuple[Labels, int]]]] = {}

    def describe(self) -> list[Metric]:
        return []  # no describe-time collection, so registering does not scrape

    def labels(self, names: tuple[str, ...], *values: str) -> Labels:
        key = (names, values)
        lab = self._labelsets.get(key)
        if lab is None:
            if len(self._labelsets) > _CACHE_LIMIT:
                self._labelsets.clear()
            lab = self._labelsets[key] = Labels(names, values)
        return lab

    def _gpu_labels(self, ids: tuple[str, str, str]) -> tuple[list[tuple[Labels, str]], list[tuple[Labels, int]]]:
        """A GPU's ECC label sets (with their columns) and clock-event-reason label sets (with their
        bits), for (gpu, model, uuid): made once, not per render."""
        got = self._per_gpu.get(ids)
        if got is None:
            gpu, model, uuid = ids
            node, lab = self.node, self.labels
            if len(self._per_gpu) > _CACHE_LIMIT:
                self._per_gpu.clear()
            got = self._per_gpu[ids] = (
                [(lab(ECC_LABELS, counter, gpu, model, node, etype, uuid), column) for etype, counter, column in ECC],
                [(lab(REASON_LABELS, gpu, model, node, reason, uuid), bit)
                 for bit, reason in CLOCK_EVENT_REASONS.items()])
        return got

    def collect(self) -> Iterator[Metric]:
        for name, counter, help_text, names, rows in self.families():
            fam = (CounterMetricFamily if counter else GaugeMetricFamily)(name, help_text, labels=names)
            for lab, value in rows:
                fam.add_metric(lab.values, float(value))
            yield fam

    def render(self) -> str:
        out: list[str] = []
        number, known, heads = self._number, self._numbers, self._heads
        for name, counter, help_text, _names, rows in self.families():
            head = heads.get((name, counter, help_text))
            if head is None:
                sample = f"{name}_total" if counter else name
                head = heads[(name, counter, help_text)] = (
                    sample, _header(sample, "counter" if counter else "gauge", help_text))
            sample = head[0]
            out.append(head[1])
            # The cache is asked inline (a method call per sample costs as much as the lookup); a
            # miss, zeros included (they are not cached), goes to _number.
            out.extend([f"{sample}{lab.text} {known.get(value) or number(value)}\n" for lab, value in rows])
        return "".join(out)

    def _number(self, value: float) -> str:
        """``floatToGoString`` remembered per value: most values (limits, clocks, counts, zeros of
        counters that never move) repeat from one scrape to the next."""
        text = self._numbers.get(value)
        if text is None:
            if value == 0:  # 0, 0.0 and -0.0 are one key but two texts: not cached, and cheap
                return _zero(value)
            text = floatToGoString(value)
            if value != value:  # NaN is never found again under itself: not worth a cache entry
                return text
            if len(self._numbers) > _CACHE_LIMIT:
                self._numbers.clear()
            self._numbers[value] = text
        return text

    def families(self) -> Iterator[Family]:
        snap = self.agent.snapshot
        node, lab = self.node, self.labels
        by_kind: dict[str, list[Sample]] = {}
        for s in snap.samples:
            by_kind.setdefault(s.kind, []).append(s)
        gpu_rows: list[tuple[Labels, dict[str, Any]]] = []
        gpu_ids: list[tuple[str, str, str]] = []  # (gpu, model, uuid)
        for s in by_kind.get("gpu", ()):
            idx = s.key["gpu_index"]
            info = snap.gpus.get(idx)
            ids = (str(idx), (info.model if info else None) or "", s.key["gpu_uuid"])
            gpu_ids.append(ids)
            gpu_rows.append((lab(GPU_LABELS, ids[0], ids[1], node, ids[2]), s.values))
        yield ("gpufleet_gpu_up", False, "1 when NVML answers for the GPU, 0 when lost or failing", GPU_LABELS,
               [(gl, 1.0 if values.get("status") == "ok" else 0.0) for gl, values in gpu_rows])
        yield from _table(_GPU_FAMILIES, GPU_LABELS, gpu_rows)
        ecc: list[Row] = []
        reasons: list[Row] = []
        for ids, (_gl, values) in zip(gpu_ids, gpu_rows, strict=True):
            ecc_labels, reason_labels = self._gpu_labels(ids)
            ecc.extend([(el, count) for el, column in ecc_labels if isinstance(count := values.get(column), _NUMBER)])
            mask = values.get("clock_event_reasons")
            if isinstance(mask, int):
                reasons.extend([(rl, 1.0 if mask & bit else 0.0) for rl, bit in reason_labels])
        yield "gpufleet_gpu_ecc_errors", True, "ECC errors by type and counter", ECC_LABELS, ecc
        yield ("gpufleet_gpu_clock_event_reason", False, "1 while the clock-event (throttle) reason is active",
               REASON_LABELS, reasons)
        xid_names, event_names = ("gpu", "node", "uuid", "xid"), ("kind", "node")
        xids: list[Row] = []
        per_kind: dict[str, int] = {}
        for (kind, code, gpu_index, uuid), n in sorted(snap.event_counts.items(), key=str):
            per_kind[kind] = per_kind.get(kind, 0) + n
            if kind == "xid":
                xids.append((lab(xid_names, "" if gpu_index is None else str(gpu_index), node, uuid or "",
                                 str(code)), n))
        yield "gpufleet_gpu_xid_errors", True, "XID errors seen since the agent started", xid_names, xids
        yield ("gpufleet_events", True, "Events recorded since the agent started", event_names,
               [(lab(event_names, kind, node), n) for kind, n in sorted(per_kind.items())])
        node_names = ("node",)
        hosts = [(lab(node_names, node), s.values) for s in by_kind.get("host", ())]
        yield from _table(_HOST_FAMILIES, node_names, hosts)
        if_names = ("interface", "node")
        ifaces = [(lab(if_names, s.key["interface"], node), s.values) for s in by_kind.get("interface", ())]
        yield from _table(_INTERFACE_FAMILIES, if_names, ifaces)
        speeds: list[Row] = []
        for il, values in ifaces:
            bits = values.get("speed_bits_per_second")
            if isinstance(bits, int | float):
                speeds.append((il, bits / 8))
        yield "gpufleet_network_speed_bytes", False, "Link speed in bytes per second", if_names, speeds
        disk_names = ("device", "node")
        yield from _table(_DISK_FAMILIES, disk_names,
                          [(lab(disk_names, s.key["device"], node), s.values) for s in by_kind.get("disk", ())])
        fs_names = ("device", "fstype", "mountpoint", "node")
        yield from _table(_FILESYSTEM_FAMILIES, fs_names,
                          [(lab(fs_names, str(s.values.get("device") or ""), str(s.values.get("fstype") or ""),
                                s.key["path"], node), s.values) for s in by_kind.get("filesystem", ())])
        yield from self._agent_families(snap)

    def _agent_families(self, snap: Any) -> Iterator[Family]:
        node, lab = self.node, self.labels
        node_names, col_names = ("node",), ("collector", "node")
        yield ("gpufleet_agent_info", False, "Agent version", ("node", "version"),
               [(lab(("node", "version"), node, self.agent.node.get("agent_version") or ""), 1.0)])
        health = sorted(snap.collectors.items())
        yield ("gpufleet_agent_collector_up", False, "1 when the collector's last run succeeded", col_names,
               [(lab(col_names, name, node), 1.0 if h["status"] == "ok" else 0.0) for name, h in health])
        yield ("gpufleet_agent_collector_consecutive_failures", False, "Failures of the collector since its last "
               "success", col_names, [(lab(col_names, name, node), h["failures"]) for name, h in health])
        store = self.agent.store
        gauges: list[tuple[str, str, float | None]] = [
            ("agent_last_collection_timestamp_seconds", "When the last collection ran", snap.ts or None),
            ("agent_collection_duration_seconds", "Wall time of the last collection", snap.cycle_seconds),
            ("agent_spool_batches", "Batches waiting in the spool", len(self.agent.spool.pending())),
        ]
        if store is not None:
            gauges.append(("agent_store_consecutive_failures", "Failed store writes since the last success",
                           store.failures))
        counters = [("agent_spool_dropped_batches_total", "Batches dropped because the spool was full",
                     self.agent.spool.dropped)]
        if store is not None:
            counters.append(("agent_batches_written_total", "Batches committed to the store", store.written_batches))
        node_row = lab(node_names, node)
        for specs, counter in ((gauges, False), (counters, True)):
            for name, help_text, value in specs:
                if value is not None:
                    yield _family_name(name, counter), counter, help_text, node_names, [(node_row, value)]


class SnapshotRegistry(CollectorRegistry):
    """A registry holding one ``SnapshotCollector``, so ``render_text`` can take the direct path."""

    def __init__(self, source: SnapshotCollector) -> None:
        super().__init__(auto_describe=False)
        self.source = source
        self.register(source)  # type: ignore[arg-type]


def make_registry(agent: Any, node: str) -> CollectorRegistry:
    return SnapshotRegistry(SnapshotCollector(agent, node))


def _zero(value: float) -> str:
    """A zero as ``floatToGoString`` writes it: ``0.0``, or ``-0.0`` for a negative zero."""
    return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _header(name: str, kind: str, help_text: str) -> str:
    doc = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def render_text(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, byte for byte what ``generate_latest`` writes
    (tests hold it to that) at a fraction of the CPU. The agent's own registry is written straight
    from its families; any other registry through its metric objects, each label set formatted once."""
    if isinstance(registry, SnapshotRegistry):
        return registry.source.render().encode()
    out: list[str] = []
    labelsets: dict[tuple[tuple[str, str], ...], str] = {}
    for fam in registry.collect():
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        out.append(_header(name, fam.type, fam.documentation))
        for sample in fam.samples:
            text = ""
            if sample.labels:
                key = tuple(sorted(sample.labels.items()))
                text = labelsets.get(key) or labelsets.setdefault(
                    key, "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in key) + "}")
            out.append(f"{sample.name}{text} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


class _ReusedThreads:
    """``ThreadingMixIn``'s thread per connection, with threads kept for the next connection.

    Starting a thread costs more CPU than serving the cached page (clone, stack, interpreter
    state): a connection goes to an idle worker when there is one, and starts a new worker only
    when all are busy, so a client that stalls (up to the handler's timeout) never holds up
    another scraper. A worker idle for ``idle_seconds`` exits, and at most ``max_idle`` wait."""

    idle_seconds = 300.0  # longer than any sane scrape interval: a scraper finds its worker waiting
    max_idle = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[tuple[Any, Any] | None]] = []  # inboxes of idle workers
        self._closed = False
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is not None:
            inbox.put((request, client_address))
            return
        inbox = queue.SimpleQueue()
        worker = threading.Thread(target=self._work, args=((request, client_address), inbox),
                                  name="metrics-request", daemon=True)
        worker.start()

    def _work(self, job: tuple[Any, Any] | None, inbox: queue.SimpleQueue[tuple[Any, Any] | None]) -> None:
        while job is not None:
            self.process_request_thread(*job)  # type: ignore[attr-defined]  # ThreadingMixIn's
            job = None  # the closed socket is not kept while waiting
            with self._lock:
                if self._closed or len(self._idle) >= self.max_idle:
                    return
                self._idle.append(inbox)
            try:
                job = inbox.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody handed it a connection: done
                        self._idle.remove(inbox)
                        return
                job = inbox.get()  # handed one just as the wait ran out

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for inbox in idle:
            inbox.put(None)


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

        class Server(_ReusedThreads, ThreadingHTTPServer):
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
