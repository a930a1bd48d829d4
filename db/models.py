"""The schema: typed SQLAlchemy 2.0 models. Every change goes through an Alembic migration.

Conventions: ``ts`` columns are Unix epoch seconds (UTC) as double precision, which both SQLite and
PostgreSQL index and bucket cheaply (``floor(ts / 60) * 60``); values are in base units; unknown is
NULL. Sample tables are wide (one row per thing per timestamp) and keyed for the two access paths
that matter: one thing over time (``(thing, ts)``) and the fleet at a time (``ts``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite so that it is an alias of the rowid.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def _ts_index(table: str) -> Index:
    """The index on a sample table's ``ts``: BRIN on PostgreSQL (rows arrive in time order, so one
    summary per 128 pages finds a time range in a few pages of index, where a B-tree costs ~22 bytes
    per row and a hot right-most leaf that every agent's COPY contends on), a B-tree on SQLite."""
    return Index(f"ix_{table}_ts", "ts", postgresql_using="brin", postgresql_with={"autosummarize": "on"})


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    cluster: Mapped[str | None] = mapped_column(String(255))
    hostname: Mapped[str | None] = mapped_column(String(255))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    driver_version: Mapped[str | None] = mapped_column(String(64))
    cuda_driver_version: Mapped[int | None] = mapped_column(Integer)
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_count: Mapped[int | None] = mapped_column(Integer)
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class Gpu(Base):
    __tablename__ = "gpus"
    __table_args__ = (Index("ix_gpus_node_index", "node_id", "index"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(96), unique=True)
    model: Mapped[str | None] = mapped_column(String(255))
    serial: Mapped[str | None] = mapped_column(String(64))
    pci_bus_id: Mapped[str | None] = mapped_column(String(32))
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    power_limit_default_watts: Mapped[float | None] = mapped_column(Float)
    sm_clock_max_hz: Mapped[float | None] = mapped_column(Float)
    mem_clock_max_hz: Mapped[float | None] = mapped_column(Float)
    pcie_link_gen_max: Mapped[int | None] = mapped_column(Integer)
    pcie_link_width_max: Mapped[int | None] = mapped_column(Integer)
    mig_mode: Mapped[int | None] = mapped_column(Integer)
    unsupported: Mapped[list[Any] | None] = mapped_column(JSON)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class GpuSample(Base):
    __tablename__ = "gpu_samples"
    __table_args__ = (_ts_index("gpu_samples"),)

    gpu_id: Mapped[int] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    node_id: Mapped[int] = mapped_column(IdType)
    status: Mapped[str] = mapped_column(String(16))  # ok | lost | error
    error: Mapped[str | None] = mapped_column(Text)
    utilization_gpu_ratio: Mapped[float | None] = mapped_column(Float)
    utilization_memory_ratio: Mapped[float | None] = mapped_column(Float)
    memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_free_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    temperature_gpu_celsius: Mapped[float | None] = mapped_column(Float)
    temperature_memory_celsius: Mapped[float | None] = mapped_column(Float)
    power_watts: Mapped[float | None] = mapped_column(Float)
    power_limit_watts: Mapped[float | None] = mapped_column(Float)
    energy_joules_total: Mapped[float | None] = mapped_column(Float)
    sm_clock_hz: Mapped[float | None] = mapped_column(Float)
    mem_clock_hz: Mapped[float | None] = mapped_column(Float)
    sm_clock_max_hz: Mapped[float | None] = mapped_column(Float)
    mem_clock_max_hz: Mapped[float | None] = mapped_column(Float)
    clock_event_reasons: Mapped[int | None] = mapped_column(BigInteger)
    performance_state: Mapped[int | None] = mapped_column(Integer)
    fan_speed_ratio: Mapped[float | None] = mapped_column(Float)
    pcie_tx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    pcie_rx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    pcie_replay_total: Mapped[int | None] = mapped_column(BigInteger)
    pcie_link_gen: Mapped[int | None] = mapped_column(Integer)
    pcie_link_gen_max: Mapped[int | None] = mapped_column(Integer)
    pcie_link_width: Mapped[int | None] = mapped_column(Integer)
    pcie_link_width_max: Mapped[int | None] = mapped_column(Integer)
    nvlink_links_active: Mapped[int | None] = mapped_column(Integer)
    nvlink_tx_bytes_total: Mapped[float | None] = mapped_column(Float)
    nvlink_rx_bytes_total: Mapped[float | None] = mapped_column(Float)
    nvlink_errors_total: Mapped[int | None] = mapped_column(BigInteger)
    ecc_corrected_volatile_total: Mapped[int | None] = mapped_column(BigInteger)
    ecc_uncorrected_volatile_total: Mapped[int | None] = mapped_column(BigInteger)
    ecc_corrected_aggregate_total: Mapped[int | None] = mapped_column(BigInteger)
    ecc_uncorrected_aggregate_total: Mapped[int | None] = mapped_column(BigInteger)
    retired_pages_sbe: Mapped[int | None] = mapped_column(Integer)
    retired_pages_dbe: Mapped[int | None] = mapped_column(Integer)
    remapped_rows_correctable: Mapped[int | None] = mapped_column(Integer)
    remapped_rows_uncorrectable: Mapped[int | None] = mapped_column(Integer)
    remapped_rows_pending: Mapped[bool | None] = mapped_column(Boolean)
    remapped_rows_failure: Mapped[bool | None] = mapped_column(Boolean)
    process_count: Mapped[int | None] = mapped_column(Integer)
    mig_mode: Mapped[int | None] = mapped_column(Integer)
    # DCGM-only (migration 0004; filled by `gpufleet import prometheus`, NULL from NVML): profiling
    # activity, the real measure of how busy a GPU is, and NVLink throughput.
    gr_engine_active_ratio: Mapped[float | None] = mapped_column(Float)
    sm_active_ratio: Mapped[float | None] = mapped_column(Float)
    sm_occupancy_ratio: Mapped[float | None] = mapped_column(Float)
    tensor_active_ratio: Mapped[float | None] = mapped_column(Float)
    dram_active_ratio: Mapped[float | None] = mapped_column(Float)
    nvlink_tx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    nvlink_rx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    nvlink_bytes_per_second: Mapped[float | None] = mapped_column(Float)  # tx + rx, all links


class GpuProcessSample(Base):
    __tablename__ = "gpu_process_samples"
    __table_args__ = (_ts_index("gpu_process_samples"),)

    gpu_id: Mapped[int] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(IdType)
    name: Mapped[str | None] = mapped_column(String(255))
    used_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mig_instance: Mapped[str | None] = mapped_column(String(32))


class HostSample(Base):
    __tablename__ = "host_samples"
    __table_args__ = (_ts_index("host_samples"),)

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    cpu_utilization_ratio: Mapped[float | None] = mapped_column(Float)
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    load1: Mapped[float | None] = mapped_column(Float)
    load5: Mapped[float | None] = mapped_column(Float)
    load15: Mapped[float | None] = mapped_column(Float)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_available_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    swap_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    swap_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    uptime_seconds: Mapped[float | None] = mapped_column(Float)
    boot_time: Mapped[float | None] = mapped_column(Float)
    processes: Mapped[int | None] = mapped_column(Integer)


class InterfaceSample(Base):
    __tablename__ = "interface_samples"
    __table_args__ = (_ts_index("interface_samples"),)

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    interface: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(16))
    rx_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    tx_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    rx_packets_total: Mapped[int | None] = mapped_column(BigInteger)
    tx_packets_total: Mapped[int | None] = mapped_column(BigInteger)
    rx_errors_total: Mapped[int | None] = mapped_column(BigInteger)
    tx_errors_total: Mapped[int | None] = mapped_column(BigInteger)
    rx_drops_total: Mapped[int | None] = mapped_column(BigInteger)
    tx_drops_total: Mapped[int | None] = mapped_column(BigInteger)
    rx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    tx_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    speed_bits_per_second: Mapped[float | None] = mapped_column(Float)
    up: Mapped[int | None] = mapped_column(Integer)
    carrier_changes_total: Mapped[int | None] = mapped_column(BigInteger)
    mtu: Mapped[int | None] = mapped_column(Integer)
    symbol_errors_total: Mapped[int | None] = mapped_column(BigInteger)  # InfiniBand
    link_downed_total: Mapped[int | None] = mapped_column(BigInteger)  # InfiniBand


class DiskSample(Base):
    __tablename__ = "disk_samples"
    __table_args__ = (_ts_index("disk_samples"),)

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    reads_total: Mapped[int | None] = mapped_column(BigInteger)
    writes_total: Mapped[int | None] = mapped_column(BigInteger)
    read_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    write_bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    read_seconds_total: Mapped[float | None] = mapped_column(Float)
    write_seconds_total: Mapped[float | None] = mapped_column(Float)
    io_seconds_total: Mapped[float | None] = mapped_column(Float)
    read_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    write_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    reads_per_second: Mapped[float | None] = mapped_column(Float)
    writes_per_second: Mapped[float | None] = mapped_column(Float)
    utilization_ratio: Mapped[float | None] = mapped_column(Float)
    queue_depth: Mapped[int | None] = mapped_column(Integer)


class FilesystemSample(Base):
    __tablename__ = "filesystem_samples"
    __table_args__ = (_ts_index("filesystem_samples"),)

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    device: Mapped[str | None] = mapped_column(String(255))
    fstype: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    free_bytes: Mapped[int | None] = mapped_column(BigInteger)
    avail_bytes: Mapped[int | None] = mapped_column(BigInteger)
    used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    files_total: Mapped[int | None] = mapped_column(BigInteger)
    files_free: Mapped[int | None] = mapped_column(BigInteger)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_ts", "ts"),
        Index("ix_events_node_ts", "node_id", "ts"),
        Index("ix_events_gpu_ts", "gpu_id", "ts"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    ts: Mapped[float] = mapped_column(Float)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    gpu_id: Mapped[int | None] = mapped_column(ForeignKey("gpus.id", ondelete="SET NULL"))
    gpu_index: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(32))
    fatal: Mapped[bool | None] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(Text)
    recommended_action: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Heartbeat(Base):
    """One row per agent flush: the node was alive at ``ts`` and its collectors were in this state."""

    __tablename__ = "heartbeats"
    __table_args__ = (Index("ix_heartbeats_ts", "ts"),)

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    collectors: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class IngestedBatch(Base):
    """Batches already written, so a replayed spool batch is skipped: exactly-once ingest."""

    __tablename__ = "ingested_batches"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[int | None] = mapped_column(IdType)
    ts: Mapped[float] = mapped_column(Float)
    records: Mapped[int] = mapped_column(Integer)


class BenchRun(Base):
    __tablename__ = "bench_runs"
    __table_args__ = (Index("ix_bench_runs_node_started", "node_id", "started_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    gpu_id: Mapped[int | None] = mapped_column(ForeignKey("gpus.id", ondelete="SET NULL"))
    workload: Mapped[str] = mapped_column(String(64))
    suite: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # ok | failed | skipped
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class BenchResult(Base):
    __tablename__ = "bench_results"
    __table_args__ = (UniqueConstraint("run_id", "metric", "gpu_id", name="uq_bench_results_run_metric"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("bench_runs.id", ondelete="CASCADE"), index=True)
    gpu_id: Mapped[int | None] = mapped_column(ForeignKey("gpus.id", ondelete="SET NULL"))
    metric: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str | None] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    median: Mapped[float | None] = mapped_column(Float)
    p90: Mapped[float | None] = mapped_column(Float)
    p99: Mapped[float | None] = mapped_column(Float)
    iqr: Mapped[float | None] = mapped_column(Float)
    cv: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int | None] = mapped_column(Integer)
    samples: Mapped[list[Any] | None] = mapped_column(JSON)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("source", "cluster", "external_id", name="uq_jobs_source_cluster_external"),
        Index("ix_jobs_submit", "submit_ts"),
        Index("ix_jobs_start_end", "start_ts", "end_ts"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))  # sacct | helios | openb | csv
    cluster: Mapped[str] = mapped_column(String(255), default="")
    external_id: Mapped[str] = mapped_column(String(128))
    user: Mapped[str | None] = mapped_column(String(255))
    account: Mapped[str | None] = mapped_column(String(255))
    partition: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    submit_ts: Mapped[float | None] = mapped_column(Float)
    start_ts: Mapped[float | None] = mapped_column(Float)
    end_ts: Mapped[float | None] = mapped_column(Float)
    gpus: Mapped[float | None] = mapped_column(Float)
    gpu_model: Mapped[str | None] = mapped_column(String(64))
    nodes: Mapped[int | None] = mapped_column(Integer)
    node_list: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# Sample record kind → table, for the write path.
SAMPLE_TABLES: dict[str, Table] = {
    kind: Base.metadata.tables[name]
    for kind, name in (("gpu", "gpu_samples"), ("gpu_process", "gpu_process_samples"), ("host", "host_samples"),
                       ("interface", "interface_samples"), ("disk", "disk_samples"),
                       ("filesystem", "filesystem_samples"))
}
EVENTS: Table = Base.metadata.tables["events"]
HEARTBEATS: Table = Base.metadata.tables["heartbeats"]


class _GpuRollup:
    """Per-GPU aggregates over a time bucket; ``ts`` is the bucket start. Ratios of samples count
    only samples where the GPU answered (``status = 'ok'``)."""

    gpu_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    node_id: Mapped[int] = mapped_column(IdType)
    samples: Mapped[int] = mapped_column(Integer)
    ok_samples: Mapped[int] = mapped_column(Integer)
    utilization_avg: Mapped[float | None] = mapped_column(Float)
    utilization_max: Mapped[float | None] = mapped_column(Float)
    utilization_min: Mapped[float | None] = mapped_column(Float)
    memory_used_avg_bytes: Mapped[float | None] = mapped_column(Float)
    memory_used_max_bytes: Mapped[float | None] = mapped_column(Float)
    temperature_avg_celsius: Mapped[float | None] = mapped_column(Float)
    temperature_max_celsius: Mapped[float | None] = mapped_column(Float)
    memory_temperature_max_celsius: Mapped[float | None] = mapped_column(Float)
    power_avg_watts: Mapped[float | None] = mapped_column(Float)
    power_max_watts: Mapped[float | None] = mapped_column(Float)
    power_limit_watts: Mapped[float | None] = mapped_column(Float)
    sm_clock_avg_hz: Mapped[float | None] = mapped_column(Float)
    throttled_ratio: Mapped[float | None] = mapped_column(Float)  # any power or thermal reason
    thermal_ratio: Mapped[float | None] = mapped_column(Float)
    power_capped_ratio: Mapped[float | None] = mapped_column(Float)
    idle_allocated_ratio: Mapped[float | None] = mapped_column(Float)  # processes but util < 5%
    ecc_corrected_max: Mapped[int | None] = mapped_column(BigInteger)
    ecc_uncorrected_max: Mapped[int | None] = mapped_column(BigInteger)
    pcie_replay_max: Mapped[int | None] = mapped_column(BigInteger)
    nvlink_errors_max: Mapped[int | None] = mapped_column(BigInteger)


class GpuRollup1m(_GpuRollup, Base):
    __tablename__ = "gpu_rollups_1m"
    __table_args__ = (Index("ix_gpu_rollups_1m_ts", "ts"),)


class GpuRollup1h(_GpuRollup, Base):
    __tablename__ = "gpu_rollups_1h"
    __table_args__ = (Index("ix_gpu_rollups_1h_ts", "ts"),)


class RollupState(Base):
    """How far each rollup has been computed: raw rows older than ``done_until`` are rolled up."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    done_until: Mapped[float] = mapped_column(Float)


# -- alerts (controller) -------------------------------------------------------------------------


class Alert(Base):
    """One alert instance, identified by the fingerprint of its sorted labels (as Alertmanager).

    ``state`` is pending (condition true, ``for`` not yet elapsed), firing, or resolved. Rule
    evaluation owns this table; routing reads it.
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_state", "state"), Index("ix_alerts_updated", "updated_at"))

    fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))  # pending | firing | resolved
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)
    value: Mapped[float | None] = mapped_column(Float)
    active_since: Mapped[float] = mapped_column(Float)  # condition first seen true (pending)
    starts_at: Mapped[float | None] = mapped_column(Float)  # fired
    ends_at: Mapped[float | None] = mapped_column(Float)  # resolved
    updated_at: Mapped[float] = mapped_column(Float)
    node_id: Mapped[int | None] = mapped_column(IdType)
    gpu_id: Mapped[int | None] = mapped_column(IdType)


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    matchers: Mapped[list[Any]] = mapped_column(JSON)  # [{"name", "value", "isRegex", "isEqual"}]
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class NotificationGroup(Base):
    """Routing state per (receiver, group key): when it was first seen and last notified, and which
    alerts the last notification carried, so group_wait / group_interval / repeat_interval hold."""

    __tablename__ = "notification_groups"

    group_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    receiver: Mapped[str] = mapped_column(String(128))
    first_seen: Mapped[float] = mapped_column(Float)
    last_notified: Mapped[float | None] = mapped_column(Float)
    last_firing: Mapped[list[Any] | None] = mapped_column(JSON)  # fingerprints
    last_resolved: Mapped[list[Any] | None] = mapped_column(JSON)


class Notification(Base):
    """The outbox: one message to one receiver, stored before any attempt, delivered at least once
    and (by its dedup key and the receiver's groupKey) at most once per group and status."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)
    receiver: Mapped[str] = mapped_column(String(128))
    group_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivering | delivered | failed
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[float | None] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_ts", "ts"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    ts: Mapped[float] = mapped_column(Float)
    receiver: Mapped[str] = mapped_column(String(128))
    ok: Mapped[bool] = mapped_column(Boolean)
    http_status: Mapped[int | None] = mapped_column(Integer)
    latency_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    controller: Mapped[str | None] = mapped_column(String(128))


class HealthState(Base):
    """Health of each GPU and node as the controller last judged it."""

    __tablename__ = "health_states"

    entity: Mapped[str] = mapped_column(String(8), primary_key=True)  # gpu | node
    entity_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    node_id: Mapped[int | None] = mapped_column(IdType)
    state: Mapped[str] = mapped_column(String(16))  # healthy | degraded | unhealthy | unknown
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    recommended_action: Mapped[str | None] = mapped_column(Text)
    since: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Lease(Base):
    """Leader election between controllers on one store: the holder renews before ``expires_at``."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """One operator action or configuration change: who, when, through what, what on what, and how it
    ended. Insert-only: ``db.audit`` has no update or delete, and triggers (migration 0006) refuse both."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_ts", "ts"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(255))  # e-mail or subject of a signed-in user, or an OS user
    source: Mapped[str] = mapped_column(String(32))  # dashboard | cli | controller
    action: Mapped[str] = mapped_column(String(64))  # silence.create, config.load, ...
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | failed | denied
    message: Mapped[str | None] = mapped_column(Text)


# -- per-node rollups (issue 6) ------------------------------------------------------------------


class _NodeRollup:
    """Per-node aggregates over a time bucket (``ts`` is its start), built from the GPU rollups of
    the same bucket and the node's host samples: what a fleet page needs per node without reading
    a row per GPU. Power and memory are sums over the node's GPUs of each GPU's mean."""

    node_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ts: Mapped[float] = mapped_column(Float, primary_key=True)
    gpu_samples: Mapped[int] = mapped_column(Integer)
    gpus_reporting: Mapped[int] = mapped_column(Integer)  # GPUs with at least one ok sample
    utilization_avg: Mapped[float | None] = mapped_column(Float)  # over every ok sample of every GPU
    utilization_max: Mapped[float | None] = mapped_column(Float)
    utilization_min: Mapped[float | None] = mapped_column(Float)
    power_sum_watts: Mapped[float | None] = mapped_column(Float)
    memory_used_sum_bytes: Mapped[float | None] = mapped_column(Float)
    temperature_max_celsius: Mapped[float | None] = mapped_column(Float)
    throttled_ratio: Mapped[float | None] = mapped_column(Float)
    host_samples: Mapped[int] = mapped_column(Integer)
    cpu_utilization_avg: Mapped[float | None] = mapped_column(Float)
    cpu_utilization_max: Mapped[float | None] = mapped_column(Float)
    host_memory_used_avg_bytes: Mapped[float | None] = mapped_column(Float)


class NodeRollup1m(_NodeRollup, Base):
    __tablename__ = "node_rollups_1m"
    __table_args__ = (Index("ix_node_rollups_1m_ts", "ts"),)


class NodeRollup1h(_NodeRollup, Base):
    __tablename__ = "node_rollups_1h"
    __table_args__ = (Index("ix_node_rollups_1h_ts", "ts"),)


# -- Prometheus import (issue 6) -----------------------------------------------------------------


class ImportCursor(Base):
    """How far a continuous import has committed: every grid point up to ``done_until`` of the
    source is in the store, so a restarted import resumes after it, neither re-importing nor skipping."""

    __tablename__ = "import_cursors"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)  # prometheus
    url: Mapped[str] = mapped_column(String(512), primary_key=True)  # without credentials
    step: Mapped[float] = mapped_column(Float)
    done_until: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


# -- planner (issue 7) ---------------------------------------------------------------------------


class RecommendationAck(Base):
    """An operator's acknowledgement of a recommendation (``planner.recommend``), by the recommendation's
    stable id (a hash of its kind and target), so the same finding stays acknowledged while it lasts. An
    acknowledged drain or reset marks its GPUs or node as draining for placement advice."""

    __tablename__ = "recommendation_acks"

    rec_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    ts: Mapped[float] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
