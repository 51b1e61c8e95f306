"""Billing: provider customers and prices, events seen once, checkouts, payments,
credit wallets and their ledger, metered usage, and the subscription history revenue is read from.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from signalmint.store.tables import BigId, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("provider", sa.String(16), nullable=False, server_default="none"))
        batch.add_column(sa.Column("provider_ref", sa.String(255), nullable=True))
    op.create_index("ix_subscriptions_provider_ref", "subscriptions", ["provider_ref"])
    op.create_table(
        "billing_customers",
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("customer_ref", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("subscriber_id", "provider", name="pk_billing_customers"),
        sa.UniqueConstraint("provider", "customer_ref", name="uq_billing_customers_provider_customer_ref"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_billing_customers_subscriber_id"),
    )
    op.create_table(
        "provider_prices",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("plan_version", sa.Integer, nullable=False),
        sa.Column("lookup_key", sa.String(200), nullable=False),
        sa.Column("product_ref", sa.String(255), nullable=False),
        sa.Column("price_ref", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("provider", "plan_id", "plan_version", name="pk_provider_prices"),
    )
    op.create_table(
        "billing_events",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("object_ref", sa.String(255), nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("provider", "event_id", name="pk_billing_events"),
    )
    op.create_table(
        "checkouts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("plan_id", sa.String(64), nullable=True),
        sa.Column("plan_version", sa.Integer, nullable=True),
        sa.Column("automation", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_ref", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_checkouts"),
        sa.UniqueConstraint("token", name="uq_checkouts_token"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_checkouts_subscriber_id"),
    )
    op.create_index("ix_checkouts_subscriber_id", "checkouts", ["subscriber_id"])
    op.create_table(
        "payments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.BigInteger, nullable=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("provider_ref", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("plan_id", sa.String(64), nullable=True),
        sa.Column("automation", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee", sa.BigInteger, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("provider", "provider_ref", name="uq_payments_provider_provider_ref"),
    )
    op.create_index("ix_payments_subscriber_id", "payments", ["subscriber_id"])
    op.create_index("ix_payments_created_at", "payments", ["created_at"])
    op.create_table(
        "wallets",
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("subscriber_id", name="pk_wallets"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_wallets_subscriber_id"),
        sa.CheckConstraint("balance >= 0", name="ck_wallets_balance_never_negative"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
        sa.UniqueConstraint("reason", "ref", name="uq_ledger_reason_ref"),
    )
    op.create_index("ix_ledger_subscriber_id_id", "ledger", ["subscriber_id", "id"])
    op.create_table(
        "meter_events",
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("reported_at", UTCDateTime, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("identifier", name="pk_meter_events"),
    )
    op.create_table(
        "subscription_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.BigInteger, nullable=False),
        sa.Column("subscriber_id", sa.BigInteger, nullable=False),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("plan_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("mrr", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscription_history"),
    )
    op.create_index("ix_subscription_history_subscriber_id", "subscription_history", ["subscriber_id"])
    op.create_index("ix_subscription_history_at", "subscription_history", ["at"])


def downgrade() -> None:
    for table in (
        "subscription_history",
        "meter_events",
        "ledger",
        "wallets",
        "payments",
        "checkouts",
        "billing_events",
        "provider_prices",
        "billing_customers",
    ):
        op.drop_table(table)
    op.drop_index("ix_subscriptions_provider_ref", "subscriptions")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("provider_ref")
        batch.drop_column("provider")
