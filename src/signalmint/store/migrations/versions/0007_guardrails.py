"""Guardrails: late signals (a flag beside each signal) and stale periods of automations.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (not a batch copy): on SQLite a batch rebuilds the table and would
    # drop the triggers that keep the signal log append-only.
    op.add_column("signals", sa.Column("late", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "stale_periods",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("detected_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("last_bar", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stale_periods"),
    )
    op.create_index("ix_stale_periods_automation_since", "stale_periods", ["automation", "since"])


def downgrade() -> None:
    op.drop_index("ix_stale_periods_automation_since", "stale_periods")
    op.drop_table("stale_periods")
    op.drop_column("signals", "late")
