"""Engine leases: automations shared between engine processes, and the engines' heartbeats.

Two new tables; nothing existing changes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_leases",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("acquired_at", UTCDateTime, nullable=True),
        sa.Column("renewed_at", UTCDateTime, nullable=True),
        sa.Column("committed_at", UTCDateTime, nullable=True),
        sa.Column("previous_holder", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("automation", name="pk_engine_leases"),
    )
    op.create_table(
        "engine_nodes",
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("holder", name="pk_engine_nodes"),
    )


def downgrade() -> None:
    op.drop_table("engine_nodes")
    op.drop_table("engine_leases")
