"""Assembles an agent from its configuration: collectors, spool, store writer, ``/metrics``."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from agent.config import AgentConfig, parse_addr
from agent.loop import AGENT_VERSION, Agent, StoreWriter
from agent.spool import Spool
from agent.supervisor import Supervised
from collectors.host import HostCollector
from collectors.kmsg import KernelLog
from collectors.network import NetworkCollector
from collectors.procinfo import Lookup, ProcessIdentity, psutil_lookup
from collectors.records import Collector
from collectors.storage import StorageCollector
from db.engine import ensure_schema, make_engine
from db.writer import Writer

log = logging.getLogger(__name__)


class AgentError(Exception):
    """A start-up problem worth one line to the user."""


def build_collectors(cfg: AgentConfig, *, nvml: Any = None, clock: Callable[[], float] | None = None,
                     process_lookup: Lookup | None = None) -> list[Collector]:
    """The collectors this node has. ``nvml`` overrides the NVML module (tests, the demo); ``process_lookup``
    the process table (default: ``/proc`` with real NVML; none with the fake, whose PIDs are invented)."""
    from collectors.nvml import NvmlCollector

    kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
    collectors: list[Collector] = []
    if nvml is None and cfg.simulate:
        from collectors.fake_nvml import FakeNVML, load_scenario

        nvml = FakeNVML(load_scenario(cfg.simulate), node_name=cfg.node_name, seed=cfg.simulate_seed, **kw)
    kernel_log = KernelLog(cfg.kernel_log) if cfg.kernel_log and not cfg.simulate else None
    if process_lookup is None and nvml is None:
        process_lookup = psutil_lookup
    key = cfg.process_privacy_key.encode() if cfg.process_privacy_key else None
    identity = ProcessIdentity(cfg.process_privacy, key, process_lookup) if process_lookup else None
    gpu_kw: dict[str, Any] = {**kw, "process_rows": cfg.process_privacy != "off"}
    if identity is not None and identity.records_processes:
        gpu_kw["process_name"] = identity
    gpu = (NvmlCollector(nvml, kernel_log=kernel_log, **gpu_kw) if nvml is not None
           else _real_nvml(kernel_log, gpu_kw))
    if gpu is not None and gpu.check():
        collectors.append(gpu)
    elif gpu is not None:
        log.warning("no NVIDIA GPU or driver found: collecting host, network and storage only")
    collectors.append(HostCollector(**kw))
    collectors.append(NetworkCollector(exclude=tuple(cfg.interfaces_exclude), **kw))
    collectors.append(StorageCollector(paths=tuple(cfg.filesystem_paths), **kw))
    return collectors


def _real_nvml(kernel_log: KernelLog | None, kw: dict[str, Any]) -> Any:
    from collectors.nvml import NvmlCollector

    try:
        import pynvml
    except ImportError:
        log.warning("nvidia-ml-py is not installed (pip install 'gpufleet[agent]'): no GPU telemetry")
        return None
    return NvmlCollector(pynvml, kernel_log=kernel_log, **kw)


def build_agent(cfg: AgentConfig, *, collectors: list[Collector] | None = None,
                with_store: bool = True) -> Agent:
    node = {"name": cfg.node_name, "cluster": cfg.cluster, "hostname": socket.gethostname(),
            "agent_version": AGENT_VERSION, "labels": cfg.labels or None}
    if collectors is None:
        collectors = build_collectors(cfg)
    supervised = [Supervised(c, interval=cfg.interval) for c in collectors]
    spool = Spool(cfg.spool_dir, max_bytes=cfg.spool_max_bytes)
    store = None
    if with_store:
        engine = make_engine(cfg.db_url)

        def make_writer() -> Writer:
            ensure_schema(engine, migrate=cfg.auto_migrate)
            return Writer(engine)

        store = StoreWriter(spool, make_writer)
    return Agent(node=node, collectors=supervised, spool=spool, store=store, interval=cfg.interval)


def serve_metrics(agent: Agent, addr: str, cfg: AgentConfig | None = None) -> Any:
    """``/metrics`` on ``addr``; over HTTPS and behind basic auth when ``cfg`` asks for them."""
    from agent.exporter import MetricsServer
    from agent.scrape_auth import BasicAuthCheck, ScrapeAuthError, tls_context

    host, port = parse_addr(addr)
    tls = auth = None
    try:
        if cfg is not None and cfg.metrics_tls_cert and cfg.metrics_tls_key:
            tls = tls_context(cfg.metrics_tls_cert, cfg.metrics_tls_key)
        if cfg is not None and cfg.metrics_basic_auth_user and cfg.metrics_basic_auth_password:
            auth = BasicAuthCheck(cfg.metrics_basic_auth_user, cfg.metrics_basic_auth_password)
    except ScrapeAuthError as exc:
        raise AgentError(str(exc)) from None
    try:
        server = MetricsServer(agent, host, port, tls=tls, auth=auth)
    except OSError as exc:
        raise AgentError(f"cannot serve /metrics on {addr}: {exc.strerror}") from exc
    log.info("serving /metrics on %s://%s:%d/metrics%s", "https" if tls else "http", host, server.server_port,
             " (basic auth)" if auth else "")
    return server


def run_agent(cfg: AgentConfig, *, once: bool = False, max_cycles: int | None = None) -> int:
    if once:
        agent = build_agent(cfg, with_store=False)
        try:
            ts, records = agent.collect()
        finally:
            agent.shutdown()
        print(json.dumps({"node": agent.node, "ts": ts, "records": [r.to_dict() for r in records]},
                         indent=2, default=str))
        return 0
    agent = build_agent(cfg)
    server = serve_metrics(agent, cfg.metrics_addr, cfg) if cfg.metrics_addr else None

    def _signal(signum: int, _frame: Any) -> None:
        log.info("received %s: flushing and exiting", signal.Signals(signum).name)
        agent.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
    log.info("agent %s on node %s: every %.3g s into %s", AGENT_VERSION, cfg.node_name, cfg.interval,
             "the store" if agent.store else "nowhere")
    from agent.benchsched import start_for_agent

    bench_stop = threading.Event()
    start_for_agent(cfg, agent, bench_stop)  # scheduled benchmarks, when the config enables them
    try:
        agent.run(max_cycles=max_cycles)
    finally:
        bench_stop.set()
        if server is not None:
            server.shutdown()
    left = len(agent.spool.pending())
    if left:
        log.warning("%d batches left in the spool %s; they are written on the next start", left, cfg.spool_dir)
    return 0
