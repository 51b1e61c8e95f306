"""Premium reports: one stored rendering per (automation, report, period), and purchases.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("period_key", sa.String(32), nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("period_end", UTCDateTime, nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("signal_count", sa.Integer, nullable=False),
        sa.Column("top", sa.JSON, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("email_html", sa.Text, nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
        sa.Column("pdf_size", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("automation", "name", "period_key", name="uq_reports_automation_name_period_key"),
    )
    op.create_index("ix_reports_automation_period_end", "reports", ["automation", "period_end"])
    op.create_table(
        "report_purchases",
        sa.Column("report_id", sa.BigInteger, nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("report_id", "subscriber_id", name="pk_report_purchases"),
    )
    op.create_index("ix_report_purchases_subscriber_id_report_id", "report_purchases", ["subscriber_id", "report_id"])


def downgrade() -> None:
    op.drop_index("ix_report_purchases_subscriber_id_report_id", "report_purchases")
    op.drop_table("report_purchases")
    op.drop_index("ix_reports_automation_period_end", "reports")
    op.drop_table("reports")
