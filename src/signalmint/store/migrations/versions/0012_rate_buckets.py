"""Shared token buckets for web replicas (rate limits and throttles, store/limits.py).

UNLOGGED on PostgreSQL: no WAL for rows rewritten on every request; a crash empties the
table, which refills every bucket (as restarting a one-process limiter does).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("full_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_buckets"),
    )
    op.create_index("ix_rate_buckets_full_at", "rate_buckets", ["full_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_buckets SET UNLOGGED")


def downgrade() -> None:
    op.drop_index("ix_rate_buckets_full_at", "rate_buckets")
    op.drop_table("rate_buckets")
