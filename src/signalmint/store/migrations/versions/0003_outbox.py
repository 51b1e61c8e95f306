"""Delivery endpoints and the outbox: one row per (signal, endpoint), claimed by workers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secrets", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_endpoints"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_endpoints_subscriber_id"),
    )
    op.create_index("ix_endpoints_subscriber_id", "endpoints", ["subscriber_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("signal_id", sa.BigInteger, nullable=False),
        sa.Column("endpoint_id", sa.BigInteger, nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("idempotency_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_before", UTCDateTime, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("receipt", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("idempotency_id", name="uq_deliveries_idempotency_id"),
        sa.UniqueConstraint("signal_id", "endpoint_id", name="uq_deliveries_signal_id_endpoint_id"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"], name="fk_deliveries_endpoint_id"),
    )
    op.create_index("ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_endpoint_id_id", "deliveries", ["endpoint_id", "id"])
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("endpoints")
