"""per-node rollups and PostgreSQL sample-table indexes (issue 6, fleet scale)

On PostgreSQL the B-tree on each sample table's ``ts`` becomes a BRIN index (samples are appended in
time order; see ``db.models._ts_index``). SQLite keeps its B-trees.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SAMPLE_TABLES = ("gpu_samples", "gpu_process_samples", "host_samples", "interface_samples", "disk_samples",
                 "filesystem_samples")
NODE_ROLLUPS = ("node_rollups_1m", "node_rollups_1h")


def _node_rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("node_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("gpu_samples", sa.Integer(), nullable=False),
        sa.Column("gpus_reporting", sa.Integer(), nullable=False),
        sa.Column("utilization_avg", sa.Float(), nullable=True),
        sa.Column("utilization_max", sa.Float(), nullable=True),
        sa.Column("utilization_min", sa.Float(), nullable=True),
        sa.Column("power_sum_watts", sa.Float(), nullable=True),
        sa.Column("memory_used_sum_bytes", sa.Float(), nullable=True),
        sa.Column("temperature_max_celsius", sa.Float(), nullable=True),
        sa.Column("throttled_ratio", sa.Float(), nullable=True),
        sa.Column("host_samples", sa.Integer(), nullable=False),
        sa.Column("cpu_utilization_avg", sa.Float(), nullable=True),
        sa.Column("cpu_utilization_max", sa.Float(), nullable=True),
        sa.Column("host_memory_used_avg_bytes", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "ts", name=op.f(f"pk_{name}")),
    )
    op.create_index(f"ix_{name}_ts", name, ["ts"], unique=False)


# Desummarizing a BRIN range needs the index's owner; retention runs as the controller's role, so
# the owner lends it this one operation, on BRIN indexes only (see db.retention).
DESUMMARIZE = """
CREATE FUNCTION gpufleet_brin_desummarize(idx regclass, first_blocks bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    block bigint;
BEGIN
    IF (SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = idx) IS DISTINCT FROM 'brin'
    THEN
        RAISE EXCEPTION '% is not a BRIN index', idx;
    END IF;
    FOREACH block IN ARRAY first_blocks LOOP
        PERFORM brin_desummarize_range(idx, block);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION gpufleet_brin_desummarize(regclass, bigint[]) FROM PUBLIC;
"""


def upgrade() -> None:
    for name in NODE_ROLLUPS:
        _node_rollup(name)
    if op.get_bind().dialect.name == "postgresql":
        for table in SAMPLE_TABLES:
            op.drop_index(f"ix_{table}_ts", table_name=table)
            op.create_index(f"ix_{table}_ts", table, ["ts"], postgresql_using="brin",
                            postgresql_with={"autosummarize": "on"})
        op.execute(DESUMMARIZE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gpufleet_brin_desummarize(regclass, bigint[])")
        for table in SAMPLE_TABLES:
            op.drop_index(f"ix_{table}_ts", table_name=table)
            op.create_index(f"ix_{table}_ts", table, ["ts"])
    for name in reversed(NODE_ROLLUPS):
        op.drop_index(f"ix_{name}_ts", table_name=name)
        op.drop_table(name)
