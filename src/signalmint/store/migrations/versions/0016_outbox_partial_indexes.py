"""The outbox's claim reads partial indexes: rows waiting, rows in flight, groups waiting.

``ix_deliveries_status_next_attempt_at`` indexed every row ever enqueued, and a claim's
``OR`` of pending and expired rows read it through a bitmap that took in every entry rows left
behind as they moved from pending to sending to sent, until the next vacuum: the claim's cost
grew with the rows delivered (12 ms at 20,000 rows, 36 ms at 100,000 on PostgreSQL). These
indexes hold only the rows a claim looks for, and a claim reads each with a plain index scan
that stops after its batch (store/outbox.py, ``earliest_due``). ``ix_deliveries_group_key``
becomes partial too: most rows have no group key and no longer take an entry.

Creating the indexes locks the table's writes while they build (seconds on millions of rows).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PARTIAL = [
    ("ix_deliveries_pending", ["next_attempt_at", "id"], "status = 'pending'"),
    ("ix_deliveries_sending", ["lease_until"], "status = 'sending'"),
    ("ix_deliveries_pending_groups", ["next_attempt_at"], "status = 'pending' AND group_key IS NOT NULL"),
    ("ix_deliveries_group_key", ["group_key"], "group_key IS NOT NULL"),
]


def upgrade() -> None:
    op.drop_index("ix_deliveries_status_next_attempt_at", "deliveries")
    op.drop_index("ix_deliveries_group_key", "deliveries")
    for name, columns, where in PARTIAL:
        op.create_index(name, "deliveries", columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def downgrade() -> None:
    for name, _columns, _where in PARTIAL:
        op.drop_index(name, "deliveries")
    op.create_index("ix_deliveries_group_key", "deliveries", ["group_key"])
    op.create_index("ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"])
