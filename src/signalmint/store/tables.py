"""The database schema, as SQLAlchemy Core tables.

Migrations under ``migrations/`` create exactly this schema; ``tests/store``
checks that they agree. Times are stored as naive UTC and read back aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import false

__all__ = ["automation_state", "automations", "bars", "metadata", "signals"]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, naive UTC in the column, aware UTC out."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; use UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

automations = Table(
    "automations",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("source_kind", String(64), nullable=False),
    Column("detector_kind", String(64), nullable=False),
    Column("detector_options", JSON, nullable=False, default=dict),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

signals = Table(
    "signals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("automation", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("key", String(128), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("late", Boolean, nullable=False, default=False, server_default=false()),
    # migration 0008: hash scheme 2 (a salted commitment to score and payload)
    Column("scheme", SmallInteger, nullable=False, server_default="1"),
    Column("prev_scheme", SmallInteger, nullable=False, server_default="0"),
    Column("salt", String(64), nullable=True),
    Column("commitment", String(64), nullable=True),
    UniqueConstraint("automation", "seq"),
    UniqueConstraint("automation", "key", "time", "kind"),
    Index(None, "automation", "id"),
    Index(None, "automation", "key", "id"),
    Index(None, "time"),
)

bars = Table(
    "bars",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("time", UTCDateTime, primary_key=True),
    Column("open", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("close", Float, nullable=False),
    Column("volume", Float, nullable=False),
    Index(None, "automation", "time"),
)

#: What happened after each signal (migration 0010): one row per signal and horizon (in bars),
#: beside the append-only log, never in a signal's hashed payload.
outcomes = Table(
    "outcomes",
    metadata,
    Column("signal_id", BigId, primary_key=True),
    Column("horizon", Integer, primary_key=True),
    Column("automation", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime, nullable=False),
    Column("entry", Float, nullable=False),
    Column("exit", Float, nullable=False),
    Column("ret", Float, nullable=False),
    Column("volume", Float, nullable=False),
    Column("baseline", Float, nullable=True),  # migration 0015: NULL is a base rate without samples
    Column("samples", Integer, nullable=False),
    Column("hit", Boolean, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("measure", String(32), nullable=False, server_default="return"),  # migration 0015
    Index(None, "automation", "time"),
)

#: The values a non-market automation observed (migration 0015): only the column its detector's
#: outcome rule watches (a shop item's price, its stock), kept as long as bars are (retention),
#: read only to measure outcomes.
observations = Table(
    "observations",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("time", UTCDateTime, primary_key=True),
    Column("value", Float, nullable=False),
    Index(None, "automation", "time"),
)

automation_state = Table(
    "automation_state",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("cursor", UTCDateTime, nullable=True),
    Column("detector_state", LargeBinary, nullable=True),
    Column("bars_total", BigInteger, nullable=False, default=0),
    Column("keys", Integer, nullable=False, default=0),
    Column("rejected", JSON, nullable=False, default=dict),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: Periods an automation had no fresh data (migration 0007): ``since`` is when its data
#: stopped (the last bar's arrival), ``ended_at`` when bars came again (NULL: still stale).
stale_periods = Table(
    "stale_periods",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("automation", String(64), nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("detected_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("last_bar", UTCDateTime, nullable=True),
    Index(None, "automation", "since"),
)

# --- plans, subscribers and access (migration 0002) ------------------------------------------

plans = Table(
    "plans",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("terms", JSON, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("current", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Column("timezone", String(64), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), nullable=False, index=True),
    Column("plan_id", String(64), nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("trial_end", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    Column("past_due_since", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("origin", String(32), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # migration 0005: who bills it (none | local | stripe | manual) and its id there
    Column("provider", String(16), nullable=False, server_default="none"),
    Column("provider_ref", String(255), nullable=True, index=True),
)

watchlist = Table(
    "watchlist",
    metadata,
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("added_at", UTCDateTime, nullable=False),
)

preferences = Table(
    "preferences",
    metadata,
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("quiet_start", Integer, nullable=True),
    Column("quiet_end", Integer, nullable=True),
    Column("daily_budget", Integer, nullable=True),
    # migration 0004: quiet hours either hold deliveries or summarise them in one digest;
    # signals within group_seconds of each other become one message
    Column("quiet_mode", String(8), nullable=False, server_default="hold"),
    Column("group_seconds", Integer, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), nullable=True, index=True),
    Column("admin", Boolean, nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Column("overage", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),
    Column("email", String(320), nullable=False),
    Column("subscriber_id", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    # migration 0006: the paid plan a sign-up link leads to the checkout of, once redeemed
    Column("plan_id", String(64), nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("subscriber_id", BigInteger, nullable=True),
    Column("admin", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

settings_kv = Table(
    "settings_kv",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- delivery: endpoints and the outbox (migration 0003) ---------------------------------------

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    Column("url", Text, nullable=False),
    Column("secrets", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # active | paused | disabled
    Column("status_reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


def _partial(name: str, *columns: str, where: str) -> Index:
    """A partial index (``WHERE where``) on PostgreSQL and SQLite; a query uses it when its own
    conditions contain ``where`` as written, with the same literals."""
    return Index(name, *columns, postgresql_where=text(where), sqlite_where=text(where))


deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("signal_id", BigInteger, nullable=False),
    Column("endpoint_id", BigInteger, ForeignKey("endpoints.id"), nullable=False),
    Column("subscriber_id", BigInteger, nullable=False, index=True),
    # a hash of (signal_id, endpoint_id), unique with them; no index of its own (migration 0017)
    Column("idempotency_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sending | sent | dead | skipped
    Column("not_before", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("receipt", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # migration 0004: deliveries sharing a group key go out as one message (grouping, digests)
    Column("group_key", String(64), nullable=True),
    UniqueConstraint("signal_id", "endpoint_id"),
    Index(None, "endpoint_id", "id"),
    # migration 0016: partial indexes, so that what a claim scans is the rows waiting or in flight,
    # not every row ever sent (see store/outbox.py's due_pending and lease_expired)
    _partial("ix_deliveries_pending", "next_attempt_at", "id", where="status = 'pending'"),
    _partial("ix_deliveries_sending", "lease_until", where="status = 'sending'"),
    _partial("ix_deliveries_pending_groups", "next_attempt_at", where="status = 'pending' AND group_key IS NOT NULL"),
    _partial("ix_deliveries_group_key", "group_key", where="group_key IS NOT NULL"),
)


# --- billing (migration 0005) ---------------------------------------------------------------
# Money is integer minor units of ``currency`` (2900 usd = 29.00 USD) everywhere; wallet
# credits are integer micro-units (1_000_000 = one major unit) so prices below a cent work.

billing_customers = Table(
    "billing_customers",
    metadata,
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), primary_key=True),
    Column("provider", String(16), primary_key=True),
    Column("customer_ref", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("provider", "customer_ref"),
)

provider_prices = Table(
    "provider_prices",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("plan_id", String(64), primary_key=True),
    Column("plan_version", Integer, primary_key=True),
    Column("lookup_key", String(200), nullable=False),
    Column("product_ref", String(255), nullable=False),
    Column("price_ref", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

billing_events = Table(
    "billing_events",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(100), nullable=False),
    Column("object_ref", String(255), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
)

checkouts = Table(
    "checkouts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), nullable=True, index=True),
    Column("email", String(320), nullable=True),
    Column("provider", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # subscription | credits | tip
    Column("plan_id", String(64), nullable=True),
    Column("plan_version", Integer, nullable=True),
    Column("automation", String(64), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # open | complete | canceled | expired
    Column("provider_ref", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
)

payments = Table(
    "payments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscriber_id", BigInteger, nullable=True, index=True),
    Column("provider", String(16), nullable=False),
    Column("provider_ref", String(255), nullable=True),
    Column("kind", String(16), nullable=False),  # subscription | credits | tip | manual
    Column("plan_id", String(64), nullable=True),
    Column("automation", String(64), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # paid | refunded | failed
    Column("note", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("provider", "provider_ref"),
    Index(None, "created_at"),
)

wallets = Table(
    "wallets",
    metadata,
    Column("subscriber_id", BigInteger, ForeignKey("subscribers.id"), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("balance >= 0", name="ck_wallets_balance_never_negative"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscriber_id", BigInteger, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),  # topup | api_call | alert | report | refund | adjust | grant
    Column("ref", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("reason", "ref"),
    Index(None, "subscriber_id", "id"),
)

meter_events = Table(
    "meter_events",
    metadata,
    Column("identifier", String(100), primary_key=True),
    Column("subscriber_id", BigInteger, nullable=False),
    Column("event_name", String(100), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("period", String(7), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("reported_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
)

subscription_history = Table(
    "subscription_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subscription_id", BigInteger, nullable=False),
    Column("subscriber_id", BigInteger, nullable=False, index=True),
    Column("plan_id", String(64), nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("mrr", BigInteger, nullable=False),  # minor units a month this subscription brings in
    Column("currency", String(3), nullable=False),
    Column("at", UTCDateTime, nullable=False, index=True),
)

ingest_events = Table(  # push ingestion: each webhook-id seen, kept for the source's retention
    "ingest_events",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False, index=True),
)

reports = Table(  # premium reports: rendered once per (automation, report name, period)
    "reports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("automation", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("period_key", String(32), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("title", String(300), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("signal_count", Integer, nullable=False),
    Column("top", JSON, nullable=False),  # [{signal_id, key, time, kind, score}], highest score first
    Column("html", Text, nullable=False),
    Column("email_html", Text, nullable=False),
    Column("pdf", LargeBinary, nullable=False),
    Column("pdf_size", Integer, nullable=False),
    UniqueConstraint("automation", "name", "period_key"),
    Index(None, "automation", "period_end"),
)

report_purchases = Table(  # one report bought with credits by one subscriber (the ledger holds the debit)
    "report_purchases",
    metadata,
    Column("report_id", BigInteger, primary_key=True),
    Column("subscriber_id", BigInteger, primary_key=True),
    Column("price", BigInteger, nullable=False),  # micro-units of credit
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "subscriber_id", "report_id"),
)

rate_buckets = Table(  # shared token buckets (store/limits.py); UNLOGGED on PostgreSQL, rows come and go
    "rate_buckets",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("at", Float, nullable=False),  # epoch seconds on the database's clock
    Column("allowed", Boolean, nullable=False),
    Column("full_at", Float, nullable=False, index=True),
)

# --- engines sharing the portfolio (migration 0013) ------------------------------------------

#: One row per automation: which engine process holds it until when. ``epoch`` grows by one at
#: every claim and fences the holder's commits (store/leases.py): a holder whose epoch is not the
#: row's any more cannot write a signal, however late it wakes up.
engine_leases = Table(
    "engine_leases",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("holder", String(128), nullable=True),
    Column("epoch", BigInteger, nullable=False, default=0),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=True),
    Column("renewed_at", UTCDateTime, nullable=True),
    Column("committed_at", UTCDateTime, nullable=True),
    Column("previous_holder", String(128), nullable=True),
)

#: Every engine process's heartbeat: the live ones (``expires_at`` ahead) share the automations.
engine_nodes = Table(
    "engine_nodes",
    metadata,
    Column("holder", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# --- report delivery (migration 0014) ----------------------------------------------------------

report_deliveries = Table(  # the report outbox: one row per (report, endpoint), enqueued with the report
    "report_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("report_id", BigInteger, nullable=False),
    Column("endpoint_id", BigInteger, ForeignKey("endpoints.id"), nullable=False),
    Column("subscriber_id", BigInteger, nullable=False, index=True),
    Column("reason", String(16), nullable=False),  # plan | purchase
    Column("idempotency_id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # pending | sending | sent | dead | skipped
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("receipt", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    UniqueConstraint("report_id", "endpoint_id"),
    Index(None, "status", "next_attempt_at"),
)

report_renderings = Table(  # who renders a period right now: one engine at a time per period
    "report_renderings",
    metadata,
    Column("automation", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("period_key", String(32), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
)
