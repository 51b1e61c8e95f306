"""Report delivery: the report outbox (one row per report and endpoint) and rendering leases.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.BigInteger, nullable=False),
        sa.Column("endpoint_id", sa.BigInteger, nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("idempotency_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("receipt", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_report_deliveries"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"], name="fk_report_deliveries_endpoint_id"),
        sa.UniqueConstraint("idempotency_id", name="uq_report_deliveries_idempotency_id"),
        sa.UniqueConstraint("report_id", "endpoint_id", name="uq_report_deliveries_report_id_endpoint_id"),
    )
    op.create_index("ix_report_deliveries_subscriber_id", "report_deliveries", ["subscriber_id"])
    op.create_index("ix_report_deliveries_status_next_attempt_at", "report_deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "report_renderings",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("period_key", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("automation", "name", "period_key", name="pk_report_renderings"),
    )


def downgrade() -> None:
    op.drop_table("report_renderings")
    op.drop_index("ix_report_deliveries_status_next_attempt_at", "report_deliveries")
    op.drop_index("ix_report_deliveries_subscriber_id", "report_deliveries")
    op.drop_table("report_deliveries")
