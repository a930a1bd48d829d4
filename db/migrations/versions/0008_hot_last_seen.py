"""gpus and nodes keep free space in each page (PostgreSQL fillfactor 50), so the write path's
``last_seen`` updates are HOT updates in place instead of new row versions and index entries

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 02:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("gpus", "nodes")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
