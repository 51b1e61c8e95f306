"""Grouping and quiet-hours digests: a group key on deliveries, two preferences.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("preferences") as batch:
        batch.add_column(sa.Column("quiet_mode", sa.String(8), nullable=False, server_default="hold"))
        batch.add_column(sa.Column("group_seconds", sa.Integer, nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("group_key", sa.String(64), nullable=True))
    op.create_index("ix_deliveries_group_key", "deliveries", ["group_key"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_group_key", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("group_key")
    with op.batch_alter_table("preferences") as batch:
        batch.drop_column("group_seconds")
        batch.drop_column("quiet_mode")
