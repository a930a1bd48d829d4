"""gpu rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:52:30.998642
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "gpu_rollups_1h",
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("ok_samples", sa.Integer(), nullable=False),
        sa.Column("utilization_avg", sa.Float(), nullable=True),
        sa.Column("utilization_max", sa.Float(), nullable=True),
        sa.Column("utilization_min", sa.Float(), nullable=True),
        sa.Column("memory_used_avg_bytes", sa.Float(), nullable=True),
        sa.Column("memory_used_max_bytes", sa.Float(), nullable=True),
        sa.Column("temperature_avg_celsius", sa.Float(), nullable=True),
        sa.Column("temperature_max_celsius", sa.Float(), nullable=True),
        sa.Column("memory_temperature_max_celsius", sa.Float(), nullable=True),
        sa.Column("power_avg_watts", sa.Float(), nullable=True),
        sa.Column("power_max_watts", sa.Float(), nullable=True),
        sa.Column("power_limit_watts", sa.Float(), nullable=True),
        sa.Column("sm_clock_avg_hz", sa.Float(), nullable=True),
        sa.Column("throttled_ratio", sa.Float(), nullable=True),
        sa.Column("thermal_ratio", sa.Float(), nullable=True),
        sa.Column("power_capped_ratio", sa.Float(), nullable=True),
        sa.Column("idle_allocated_ratio", sa.Float(), nullable=True),
        sa.Column("ecc_corrected_max", sa.BigInteger(), nullable=True),
        sa.Column("ecc_uncorrected_max", sa.BigInteger(), nullable=True),
        sa.Column("pcie_replay_max", sa.BigInteger(), nullable=True),
        sa.Column("nvlink_errors_max", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("gpu_id", "ts", name=op.f("pk_gpu_rollups_1h")),
    )
    with op.batch_alter_table("gpu_rollups_1h", schema=None) as batch_op:
        batch_op.create_index("ix_gpu_rollups_1h_ts", ["ts"], unique=False)

    op.create_table(
        "gpu_rollups_1m",
        sa.Column("gpu_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("ok_samples", sa.Integer(), nullable=False),
        sa.Column("utilization_avg", sa.Float(), nullable=True),
        sa.Column("utilization_max", sa.Float(), nullable=True),
        sa.Column("utilization_min", sa.Float(), nullable=True),
        sa.Column("memory_used_avg_bytes", sa.Float(), nullable=True),
        sa.Column("memory_used_max_bytes", sa.Float(), nullable=True),
        sa.Column("temperature_avg_celsius", sa.Float(), nullable=True),
        sa.Column("temperature_max_celsius", sa.Float(), nullable=True),
        sa.Column("memory_temperature_max_celsius", sa.Float(), nullable=True),
        sa.Column("power_avg_watts", sa.Float(), nullable=True),
        sa.Column("power_max_watts", sa.Float(), nullable=True),
        sa.Column("power_limit_watts", sa.Float(), nullable=True),
        sa.Column("sm_clock_avg_hz", sa.Float(), nullable=True),
        sa.Column("throttled_ratio", sa.Float(), nullable=True),
        sa.Column("thermal_ratio", sa.Float(), nullable=True),
        sa.Column("power_capped_ratio", sa.Float(), nullable=True),
        sa.Column("idle_allocated_ratio", sa.Float(), nullable=True),
        sa.Column("ecc_corrected_max", sa.BigInteger(), nullable=True),
        sa.Column("ecc_uncorrected_max", sa.BigInteger(), nullable=True),
        sa.Column("pcie_replay_max", sa.BigInteger(), nullable=True),
        sa.Column("nvlink_errors_max", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("gpu_id", "ts", name=op.f("pk_gpu_rollups_1m")),
    )
    with op.batch_alter_table("gpu_rollups_1m", schema=None) as batch_op:
        batch_op.create_index("ix_gpu_rollups_1m_ts", ["ts"], unique=False)

    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("done_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_state")),
    )


def downgrade() -> None:

    op.drop_table("rollup_state")
    with op.batch_alter_table("gpu_rollups_1m", schema=None) as batch_op:
        batch_op.drop_index("ix_gpu_rollups_1m_ts")

    op.drop_table("gpu_rollups_1m")
    with op.batch_alter_table("gpu_rollups_1h", schema=None) as batch_op:
        batch_op.drop_index("ix_gpu_rollups_1h_ts")

    op.drop_table("gpu_rollups_1h")
