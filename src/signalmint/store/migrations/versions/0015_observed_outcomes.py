"""Outcomes beyond market data: the observed values they are measured on, and what each measures.

``observations`` keeps, for automations whose detector's outcome rule watches a column (a shop
item's price or stock, a metric), that column's values by key and time. ``outcomes`` gains
``measure`` (existing rows are market returns) and a nullable ``baseline`` (a base rate
without earlier observations).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "observations",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("automation", "key", "time", name="pk_observations"),
    )
    op.create_index("ix_observations_automation_time", "observations", ["automation", "time"])
    with op.batch_alter_table("outcomes") as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column("measure", sa.String(32), nullable=False, server_default="return"))
        batch.alter_column("baseline", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM outcomes WHERE baseline IS NULL")
    with op.batch_alter_table("outcomes") as batch:
        batch.alter_column("baseline", existing_type=sa.Float, nullable=False)
        batch.drop_column("measure")
    op.drop_index("ix_observations_automation_time", "observations")
    op.drop_table("observations")
