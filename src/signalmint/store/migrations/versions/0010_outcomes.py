"""Outcomes: what the price did after each signal, one row per signal and horizon.

A new table beside the append-only signal log (the log and its hashes are untouched).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("signal_id", BigId, nullable=False),
        sa.Column("horizon", sa.Integer, nullable=False),
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("end_time", UTCDateTime, nullable=False),
        sa.Column("entry", sa.Float, nullable=False),
        sa.Column("exit", sa.Float, nullable=False),
        sa.Column("ret", sa.Float, nullable=False),
        sa.Column("volume", sa.Float, nullable=False),
        sa.Column("baseline", sa.Float, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("hit", sa.Boolean, nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("signal_id", "horizon", name="pk_outcomes"),
    )
    op.create_index("ix_outcomes_automation_time", "outcomes", ["automation", "time"])


def downgrade() -> None:
    op.drop_index("ix_outcomes_automation_time", "outcomes")
    op.drop_table("outcomes")
