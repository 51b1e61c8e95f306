"""The outbox's idempotency id keeps no unique index of its own.

``deliveries.idempotency_id`` is a hash of ``(signal_id, endpoint_id)``, which are unique
together already, and no query looks a row up by it. Its unique index cost every enqueued row
an insert at a random place in a growing B-tree: on SQLite 10,000 rows of one fan-out took
143 ms with it and 84 ms without (a one-off measurement when this was written: medians of 6
such inserts into each of two copies of the table, alternated, each copy growing to 60,000 rows).

On SQLite a unique constraint goes only with its table, so the table is rebuilt (rows copied
in one transaction; the partial indexes of 0016 are dropped first and made again after).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CONSTRAINT = "uq_deliveries_idempotency_id"
PARTIAL = [  # as 0016 made them
    ("ix_deliveries_pending", ["next_attempt_at", "id"], "status = 'pending'"),
    ("ix_deliveries_sending", ["lease_until"], "status = 'sending'"),
    ("ix_deliveries_pending_groups", ["next_attempt_at"], "status = 'pending' AND group_key IS NOT NULL"),
    ("ix_deliveries_group_key", ["group_key"], "group_key IS NOT NULL"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(CONSTRAINT, "deliveries", type_="unique")
        return
    if CONSTRAINT in {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("deliveries")}:
        op.drop_index(CONSTRAINT, "deliveries")  # made by this migration's downgrade
        return
    for name, _columns, _where in PARTIAL:  # the rebuilt table would get them back without their WHERE
        op.drop_index(name, "deliveries")
    with op.batch_alter_table("deliveries", recreate="always") as batch:
        batch.drop_constraint(CONSTRAINT, type_="unique")
    for name, columns, where in PARTIAL:
        op.create_index(name, "deliveries", columns, sqlite_where=sa.text(where))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint(CONSTRAINT, "deliveries", ["idempotency_id"])
    else:  # the same guarantee, without rebuilding the table again
        op.create_index(CONSTRAINT, "deliveries", ["idempotency_id"], unique=True)
