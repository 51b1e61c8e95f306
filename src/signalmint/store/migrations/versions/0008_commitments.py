"""Signals: hash scheme 2, a salted commitment to the numbers (publicly verifiable chains).

Scheme 1 (every signal stored before this migration) hashes the payload itself, so its hash
can only be shown once the numbers are. Scheme 2 hashes a commitment
``H(salt, score, payload)`` with a random per-signal salt: the hash and the commitment can be
published at once, the salt and the numbers when they are revealed. Old rows keep scheme 1
(the log refuses UPDATE): columns are only added, with defaults, so no row is rewritten.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch table copy): the append-only triggers stay as they are
    op.add_column("signals", sa.Column("scheme", sa.SmallInteger, nullable=False, server_default="1"))
    op.add_column("signals", sa.Column("prev_scheme", sa.SmallInteger, nullable=False, server_default="0"))
    op.add_column("signals", sa.Column("salt", sa.String(64), nullable=True))
    op.add_column("signals", sa.Column("commitment", sa.String(64), nullable=True))


def downgrade() -> None:
    for name in ("commitment", "salt", "prev_scheme", "scheme"):
        op.drop_column("signals", name)
