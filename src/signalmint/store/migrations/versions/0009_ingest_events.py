"""Push ingestion: the webhook-ids seen per automation, so a replay adds nothing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_events",
        sa.Column("automation", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_ingest_events_received_at", "ingest_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_ingest_events_received_at", table_name="ingest_events")
    op.drop_table("ingest_events")
