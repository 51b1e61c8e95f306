"""Automations, the append-only signal log, raw bars and engine checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PG_GUARD = """
CREATE OR REPLACE FUNCTION signalmint_signals_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'signals are append-only';
END;
$$ LANGUAGE plpgsql;
"""


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("source_kind", sa.String(64), nullable=False),
        sa.Column("detector_kind", sa.String(64), nullable=False),
        sa.Column("detector_options", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_automations"),
    )
    op.create_table(
        "signals",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signals"),
        sa.UniqueConstraint("automation", "seq", name="uq_signals_automation_seq"),
        sa.UniqueConstraint("automation", "key", "time", "kind", name="uq_signals_automation_key_time_kind"),
    )
    op.create_index("ix_signals_automation_id", "signals", ["automation", "id"])
    op.create_index("ix_signals_automation_key_id", "signals", ["automation", "key", "id"])
    op.create_index("ix_signals_time", "signals", ["time"])
    op.create_table(
        "bars",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("open", sa.Float, nullable=False),
        sa.Column("high", sa.Float, nullable=False),
        sa.Column("low", sa.Float, nullable=False),
        sa.Column("close", sa.Float, nullable=False),
        sa.Column("volume", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("automation", "key", "time", name="pk_bars"),
    )
    op.create_index("ix_bars_automation_time", "bars", ["automation", "time"])
    op.create_table(
        "automation_state",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("cursor", UTCDateTime, nullable=True),
        sa.Column("detector_state", sa.LargeBinary, nullable=True),
        sa.Column("bars_total", sa.BigInteger, nullable=False),
        sa.Column("keys", sa.Integer, nullable=False),
        sa.Column("rejected", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("automation", name="pk_automation_state"),
    )
    # The signal log is append-only: the database itself refuses edits and deletes.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD)
        op.execute(
            "CREATE TRIGGER signals_append_only BEFORE UPDATE OR DELETE ON signals "
            "FOR EACH ROW EXECUTE FUNCTION signalmint_signals_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER signals_no_{event.lower()} BEFORE {event} ON signals "
                "BEGIN SELECT RAISE(ABORT, 'signals are append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS signals_append_only ON signals")
        op.execute("DROP FUNCTION IF EXISTS signalmint_signals_append_only()")
    op.drop_table("automation_state")
    op.drop_table("bars")
    op.drop_table("signals")
    op.drop_table("automations")
