"""Prometheus import cursors (issue 6, import); DCGM profiling and NVLink rate columns on gpu_samples

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Fields dcgm-exporter has and NVML does not (see docs/PROMETHEUS.md); nullable, so ADD COLUMN is
# instant on both backends and agent rows simply leave them NULL.
GPU_COLUMNS = ("gr_engine_active_ratio", "sm_active_ratio", "sm_occupancy_ratio", "tensor_active_ratio",
               "dram_active_ratio", "nvlink_tx_bytes_per_second", "nvlink_rx_bytes_per_second",
               "nvlink_bytes_per_second")


def upgrade() -> None:
    op.create_table(
        "import_cursors",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("step", sa.Float(), nullable=False),
        sa.Column("done_until", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", "url", name=op.f("pk_import_cursors")),
    )
    for name in GPU_COLUMNS:
        op.add_column("gpu_samples", sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gpu_samples", schema=None) as batch_op:
        for name in reversed(GPU_COLUMNS):
            batch_op.drop_column(name)
    op.drop_table("import_cursors")
