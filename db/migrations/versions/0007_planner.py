"""planner tables (issue 7)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recommendation acknowledgements (planner.recommend)
    op.create_table(
        "recommendation_acks",
        sa.Column("rec_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("rec_id", name=op.f("pk_recommendation_acks")),
    )


def downgrade() -> None:
    op.drop_table("recommendation_acks")  # recommendation acknowledgements
