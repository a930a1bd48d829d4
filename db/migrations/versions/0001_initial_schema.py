"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 21:38:49.910752
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "ingested_batches",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_ingested_batches")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("cluster", sa.String(length=255), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=True),
        sa.Column("partition", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("submit_ts", sa.Float(), nullable=True),
        sa.Column("start_ts", sa.Float(), nullable=True),
        sa.Column("end_ts", sa.Float(), nullable=True),
        sa.Column("gpus", sa.Float(), nullable=True),
        sa.Column("gpu_model", sa.String(length=64), nullable=True),
        sa.Column("nodes", sa.Integer(), nullable=True),
        sa.Column("node_list", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.String(length=32), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("source", "cluster", "external_id", name="uq_jobs_source_cluster_external"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_start_end", ["start_ts", "end_ts"], unique=False)
        batch_op.create_index("ix_jobs_submit", ["submit_ts"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("cluster", sa.String(length=255), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("driver_version", sa.String(length=64), nullable=True),
        sa.Column("cuda_driver_version", sa.Integer(), nullable=True),
        sa.Column("cpu_count", sa.Integer(), nullable=True),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("name", name=op.f("uq_nodes_name")),
    )
    op.create_table(
        "disk_samples",
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("reads_total", sa.BigInteger(), nullable=True),
        sa.Column("writes_total", sa.BigInteger(), nullable=True),
        sa.Column("read_bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("write_bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("read_seconds_total", sa.Float(), nullable=True),
        sa.Column("write_seconds_total", sa.Float(), nullable=True),
        sa.Column("io_seconds_total", sa.Float(), nullable=True),
        sa.Column("read_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("write_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("reads_per_second", sa.Float(), nullable=True),
        sa.Column("writes_per_second", sa.Float(), nullable=True),
        sa.Column("utilization_ratio", sa.Float(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_disk_samples_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "device", "ts", name=op.f("pk_disk_samples")),
    )
    with op.batch_alter_table("disk_samples", schema=None) as batch_op:
        batch_op.create_index("ix_disk_samples_ts", ["ts"], unique=False)

    op.create_table(
        "filesystem_samples",
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=True),
        sa.Column("fstype", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("avail_bytes", sa.BigInteger(), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("files_total", sa.BigInteger(), nullable=True),
        sa.Column("files_free", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_filesystem_samples_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "path", "ts", name=op.f("pk_filesystem_samples")),
    )
    with op.batch_alter_table("filesystem_samples", schema=None) as batch_op:
        batch_op.create_index("ix_filesystem_samples_ts", ["ts"], unique=False)

    op.create_table(
        "gpus",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=96), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("pci_bus_id", sa.String(length=32), nullable=True),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("power_limit_default_watts", sa.Float(), nullable=True),
        sa.Column("sm_clock_max_hz", sa.Float(), nullable=True),
        sa.Column("mem_clock_max_hz", sa.Float(), nullable=True),
        sa.Column("pcie_link_gen_max", sa.Integer(), nullable=True),
        sa.Column("pcie_link_width_max", sa.Integer(), nullable=True),
        sa.Column("mig_mode", sa.Integer(), nullable=True),
        sa.Column("unsupported", sa.JSON(), nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_gpus_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpus")),
        sa.UniqueConstraint("uuid", name=op.f("uq_gpus_uuid")),
    )
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.create_index("ix_gpus_node_index", ["node_id", "index"], unique=False)

    op.create_table(
        "heartbeats",
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("collectors", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_heartbeats_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "ts", name=op.f("pk_heartbeats")),
    )
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.create_index("ix_heartbeats_ts", ["ts"], unique=False)

    op.create_table(
        "host_samples",
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("cpu_utilization_ratio", sa.Float(), nullable=True),
        sa.Column("cpu_count", sa.Integer(), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("load5", sa.Float(), nullable=True),
        sa.Column("load15", sa.Float(), nullable=True),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_available_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("swap_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("swap_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("uptime_seconds", sa.Float(), nullable=True),
        sa.Column("boot_time", sa.Float(), nullable=True),
        sa.Column("processes", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_host_samples_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "ts", name=op.f("pk_host_samples")),
    )
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.create_index("ix_host_samples_ts", ["ts"], unique=False)

    op.create_table(
        "interface_samples",
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("interface", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("rx_bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("tx_bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("rx_packets_total", sa.BigInteger(), nullable=True),
        sa.Column("tx_packets_total", sa.BigInteger(), nullable=True),
        sa.Column("rx_errors_total", sa.BigInteger(), nullable=True),
        sa.Column("tx_errors_total", sa.BigInteger(), nullable=True),
        sa.Column("rx_drops_total", sa.BigInteger(), nullable=True),
        sa.Column("tx_drops_total", sa.BigInteger(), nullable=True),
        sa.Column("rx_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("tx_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("speed_bits_per_second", sa.Float(), nullable=True),
        sa.Column("up", sa.Integer(), nullable=True),
        sa.Column("carrier_changes_total", sa.BigInteger(), nullable=True),
        sa.Column("mtu", sa.Integer(), nullable=True),
        sa.Column("symbol_errors_total", sa.BigInteger(), nullable=True),
        sa.Column("link_downed_total", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_interface_samples_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "interface", "ts", name=op.f("pk_interface_samples")),
    )
    with op.batch_alter_table("interface_samples", schema=None) as batch_op:
        batch_op.create_index("ix_interface_samples_ts", ["ts"], unique=False)

    op.create_table(
        "bench_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("workload", sa.String(length=64), nullable=False),
        sa.Column("suite", sa.String(length=32), nullable=True),
        sa.Column("device", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_bench_runs_gpu_id_gpus"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_bench_runs_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bench_runs")),
        sa.UniqueConstraint("uid", name=op.f("uq_bench_runs_uid")),
    )
    with op.batch_alter_table("bench_runs", schema=None) as batch_op:
        batch_op.create_index("ix_bench_runs_node_started", ["node_id", "started_at"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("gpu_index", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("fatal", sa.Boolean(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("recommended_action", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_events_gpu_id_gpus"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_events_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("uid", name=op.f("uq_events_uid")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_gpu_ts", ["gpu_id", "ts"], unique=False)
        batch_op.create_index("ix_events_node_ts", ["node_id", "ts"], unique=False)
        batch_op.create_index("ix_events_ts", ["ts"], unique=False)

    op.create_table(
        "gpu_process_samples",
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("used_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("mig_instance", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_gpu_process_samples_gpu_id_gpus"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("gpu_id", "ts", "pid", name=op.f("pk_gpu_process_samples")),
    )
    with op.batch_alter_table("gpu_process_samples", schema=None) as batch_op:
        batch_op.create_index("ix_gpu_process_samples_ts", ["ts"], unique=False)

    op.create_table(
        "gpu_samples",
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("utilization_gpu_ratio", sa.Float(), nullable=True),
        sa.Column("utilization_memory_ratio", sa.Float(), nullable=True),
        sa.Column("memory_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("temperature_gpu_celsius", sa.Float(), nullable=True),
        sa.Column("temperature_memory_celsius", sa.Float(), nullable=True),
        sa.Column("power_watts", sa.Float(), nullable=True),
        sa.Column("power_limit_watts", sa.Float(), nullable=True),
        sa.Column("energy_joules_total", sa.Float(), nullable=True),
        sa.Column("sm_clock_hz", sa.Float(), nullable=True),
        sa.Column("mem_clock_hz", sa.Float(), nullable=True),
        sa.Column("sm_clock_max_hz", sa.Float(), nullable=True),
        sa.Column("mem_clock_max_hz", sa.Float(), nullable=True),
        sa.Column("clock_event_reasons", sa.BigInteger(), nullable=True),
        sa.Column("performance_state", sa.Integer(), nullable=True),
        sa.Column("fan_speed_ratio", sa.Float(), nullable=True),
        sa.Column("pcie_tx_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("pcie_rx_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("pcie_replay_total", sa.BigInteger(), nullable=True),
        sa.Column("pcie_link_gen", sa.Integer(), nullable=True),
        sa.Column("pcie_link_gen_max", sa.Integer(), nullable=True),
        sa.Column("pcie_link_width", sa.Integer(), nullable=True),
        sa.Column("pcie_link_width_max", sa.Integer(), nullable=True),
        sa.Column("nvlink_links_active", sa.Integer(), nullable=True),
        sa.Column("nvlink_tx_bytes_total", sa.Float(), nullable=True),
        sa.Column("nvlink_rx_bytes_total", sa.Float(), nullable=True),
        sa.Column("nvlink_errors_total", sa.BigInteger(), nullable=True),
        sa.Column("ecc_corrected_volatile_total", sa.BigInteger(), nullable=True),
        sa.Column("ecc_uncorrected_volatile_total", sa.BigInteger(), nullable=True),
        sa.Column("ecc_corrected_aggregate_total", sa.BigInteger(), nullable=True),
        sa.Column("ecc_uncorrected_aggregate_total", sa.BigInteger(), nullable=True),
        sa.Column("retired_pages_sbe", sa.Integer(), nullable=True),
        sa.Column("retired_pages_dbe", sa.Integer(), nullable=True),
        sa.Column("remapped_rows_correctable", sa.Integer(), nullable=True),
        sa.Column("remapped_rows_uncorrectable", sa.Integer(), nullable=True),
        sa.Column("remapped_rows_pending", sa.Boolean(), nullable=True),
        sa.Column("remapped_rows_failure", sa.Boolean(), nullable=True),
        sa.Column("process_count", sa.Integer(), nullable=True),
        sa.Column("mig_mode", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_gpu_samples_gpu_id_gpus"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("gpu_id", "ts", name=op.f("pk_gpu_samples")),
    )
    with op.batch_alter_table("gpu_samples", schema=None) as batch_op:
        batch_op.create_index("ix_gpu_samples_ts", ["ts"], unique=False)

    op.create_table(
        "bench_results",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("median", sa.Float(), nullable=True),
        sa.Column("p90", sa.Float(), nullable=True),
        sa.Column("p99", sa.Float(), nullable=True),
        sa.Column("iqr", sa.Float(), nullable=True),
        sa.Column("cv", sa.Float(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("samples", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_bench_results_gpu_id_gpus"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["bench_runs.id"], name=op.f("fk_bench_results_run_id_bench_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bench_results")),
        sa.UniqueConstraint("run_id", "metric", "gpu_id", name="uq_bench_results_run_metric"),
    )
    with op.batch_alter_table("bench_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bench_results_run_id"), ["run_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("bench_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bench_results_run_id"))

    op.drop_table("bench_results")
    with op.batch_alter_table("gpu_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_gpu_samples_ts")

    op.drop_table("gpu_samples")
    with op.batch_alter_table("gpu_process_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_gpu_process_samples_ts")

    op.drop_table("gpu_process_samples")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_ts")
        batch_op.drop_index("ix_events_node_ts")
        batch_op.drop_index("ix_events_gpu_ts")

    op.drop_table("events")
    with op.batch_alter_table("bench_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_bench_runs_node_started")

    op.drop_table("bench_runs")
    with op.batch_alter_table("interface_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_interface_samples_ts")

    op.drop_table("interface_samples")
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_host_samples_ts")

    op.drop_table("host_samples")
    with op.batch_alter_table("heartbeats", schema=None) as batch_op:
        batch_op.drop_index("ix_heartbeats_ts")

    op.drop_table("heartbeats")
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.drop_index("ix_gpus_node_index")

    op.drop_table("gpus")
    with op.batch_alter_table("filesystem_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_filesystem_samples_ts")

    op.drop_table("filesystem_samples")
    with op.batch_alter_table("disk_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_disk_samples_ts")

    op.drop_table("disk_samples")
    op.drop_table("nodes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_submit")
        batch_op.drop_index("ix_jobs_start_end")

    op.drop_table("jobs")
    op.drop_table("ingested_batches")
