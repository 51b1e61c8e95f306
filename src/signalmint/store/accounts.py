"""Subscribers, their subscriptions, watchlists and notification preferences."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update

from ..errors import AccessError, LimitError
from ..records import Plan, Preferences, Subscriber, Subscription
from .sql import among, raw_columns, reader
from .tables import plans, preferences, subscribers, subscription_history, subscriptions, watchlist

__all__ = [
    "MAX_WATCHLIST",
    "PAYING_STATES",
    "SubscriberSummary",
    "confirm_subscriber",
    "current_subscription",
    "due_subscriptions",
    "ensure_subscriber",
    "every_preference",
    "every_watchlist",
    "get_preferences",
    "get_subscriber",
    "get_subscription",
    "get_watchlist",
    "list_subscribers",
    "lock_subscriber",
    "normalize_email",
    "own_daily_budgets",
    "preferences_of",
    "record_history",
    "set_preference",
    "set_subscription_state",
    "set_watchlist",
    "start_subscription",
    "subscriber_by_email",
    "subscribers_with_subscriptions",
    "watchlist_cap",
]

#: Keys any one watchlist may hold, whatever the plan says.
MAX_WATCHLIST = 1000


def normalize_email(email: str) -> str:
    """Trimmed and lowercased; a light sanity check (the confirmation link is the real one).

    >>> normalize_email("  Ada@Example.COM ")
    'ada@example.com'
    """
    value = email.strip().lower()
    local, _, domain = value.partition("@")
    if not local or "." not in domain or len(value) > 254 or any(c.isspace() for c in value):
        raise AccessError("that does not look like an email address")
    return value


def _subscriber(row: Any) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        timezone=row.timezone,
    )


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        subscriber_id=row.subscriber_id,
        plan_id=row.plan_id,
        plan_version=row.plan_version,
        state=row.state,
        started_at=row.started_at,
        trial_end=row.trial_end,
        period_end=row.period_end,
        past_due_since=row.past_due_since,
        ended_at=row.ended_at,
        provider=row.provider,
        provider_ref=row.provider_ref,
    )


#: A :class:`Subscriber`'s and a :class:`Subscription`'s fields, in order, as their tables' columns.
_SUBSCRIBER_FIELDS = ("id", "email", "created_at", "confirmed_at", "timezone")
_SUBSCRIPTION_FIELDS = (
    "id", "subscriber_id", "plan_id", "plan_version", "state", "started_at", "trial_end", "period_end",
    "past_due_since", "ended_at", "provider", "provider_ref",
)  # fmt: skip


# States in which a subscription brings money in: MRR counts them (``canceled`` means canceled
# at period end, still paid for until then). Trials and comps bring nothing yet.
PAYING_STATES = frozenset({"active", "past_due", "canceled"})


def record_history(conn: Connection, subscription_ids: Iterable[int], now: datetime) -> None:
    """Append each subscription's state as of ``now`` to ``subscription_history`` (revenue reads it)."""
    ids = list(subscription_ids)
    if not ids:
        return
    rows = conn.execute(
        select(subscriptions, plans.c.terms)
        .join(plans, (plans.c.id == subscriptions.c.plan_id) & (plans.c.version == subscriptions.c.plan_version))
        .where(subscriptions.c.id.in_(ids))
    ).all()
    history = []
    for row in rows:
        terms = row.terms or {}
        price = int(terms.get("price", 0))
        monthly = price if terms.get("interval", "month") == "month" else round(price / 12)
        paying = row.state in PAYING_STATES and row.ended_at is None
        history.append(
            {
                "subscription_id": row.id,
                "subscriber_id": row.subscriber_id,
                "plan_id": row.plan_id,
                "plan_version": row.plan_version,
                "state": row.state if row.ended_at is None else "ended",
                "mrr": monthly if paying else 0,
                "currency": terms.get("currency", "usd"),
                "at": now,
            }
        )
    if history:
        conn.execute(subscription_history.insert(), history)


def get_subscriber(conn: Connection, subscriber_id: int) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    return _subscriber(row) if row else None


def subscriber_by_email(conn: Connection, email: str) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.email == normalize_email(email))).first()
    return _subscriber(row) if row else None


def ensure_subscriber(conn: Connection, email: str, now: datetime, timezone: str = "UTC") -> Subscriber:
    """The subscriber with this email, created (unconfirmed) if new."""
    found = subscriber_by_email(conn, email)
    if found is not None:
        return found
    new_id = conn.execute(
        subscribers.insert()
        .values(email=normalize_email(email), created_at=now, timezone=timezone)
        .returning(subscribers.c.id)
    ).scalar_one()
    created = get_subscriber(conn, new_id)
    assert created is not None
    return created


def confirm_subscriber(conn: Connection, subscriber_id: int, now: datetime) -> None:
    conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id, subscribers.c.confirmed_at.is_(None))
        .values(confirmed_at=now)
    )


def current_subscription(conn: Connection, subscriber_id: int) -> Subscription | None:
    """The subscriber's open subscription (one at a time), if any."""
    row = conn.execute(
        select(subscriptions)
        .where(subscriptions.c.subscriber_id == subscriber_id, subscriptions.c.ended_at.is_(None))
        .order_by(subscriptions.c.id.desc())
        .limit(1)
    ).first()
    return _subscription(row) if row else None


def start_subscription(
    conn: Connection,
    subscriber_id: int,
    plan: Plan,
    now: datetime,
    *,
    origin: str,
    state: str | None = None,
    period_end: datetime | None = None,
    trial_end: datetime | None = None,
    provider: str = "none",
    provider_ref: str | None = None,
) -> Subscription:
    """Close the open subscription (if any) and open one on ``plan``.

    Without an explicit ``state``: a plan with trial days starts ``trialing``,
    a free plan ``active``. Paid plans without a trial need a payment first
    (or an operator's comp), which callers decide. ``provider`` and ``provider_ref``
    name who bills it and its id there. Both changes go to ``subscription_history``.
    """
    closing = [
        r.id
        for r in conn.execute(
            select(subscriptions.c.id).where(
                subscriptions.c.subscriber_id == subscriber_id, subscriptions.c.ended_at.is_(None)
            )
        )
    ]
    if closing:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id.in_(closing))
            .values(ended_at=now, state="expired", updated_at=now)
        )
        record_history(conn, closing, now)
    if state is None:
        state = "trialing" if plan.trial_days > 0 else "active"
    if state == "trialing" and trial_end is None:
        trial_end = now + timedelta(days=plan.trial_days)
    new_id = conn.execute(
        subscriptions.insert()
        .values(
            subscriber_id=subscriber_id,
            plan_id=plan.id,
            plan_version=plan.version,
            state=state,
            started_at=now,
            trial_end=trial_end,
            period_end=period_end,
            origin=origin,
            updated_at=now,
            provider=provider,
            provider_ref=provider_ref,
        )
        .returning(subscriptions.c.id)
    ).scalar_one()
    record_history(conn, [new_id], now)
    row = conn.execute(select(subscriptions).where(subscriptions.c.id == new_id)).one()
    return _subscription(row)


def set_subscription_state(conn: Connection, subscription_id: int, now: datetime, **values: Any) -> Subscription:
    """Update a subscription's state fields (state, trial_end, period_end, past_due_since, ended_at).

    A change of state (or an end) is appended to ``subscription_history``.
    """
    allowed = {"state", "trial_end", "period_end", "past_due_since", "ended_at"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not a state field: {sorted(unknown)}")
    before = conn.execute(
        select(subscriptions.c.state, subscriptions.c.ended_at).where(subscriptions.c.id == subscription_id)
    ).first()
    conn.execute(update(subscriptions).where(subscriptions.c.id == subscription_id).values(updated_at=now, **values))
    if before is not None and (
        before.state != values.get("state", before.state) or before.ended_at != values.get("ended_at", before.ended_at)
    ):
        record_history(conn, [subscription_id], now)
    return _subscription(conn.execute(select(subscriptions).where(subscriptions.c.id == subscription_id)).one())


def get_watchlist(conn: Connection, subscriber_id: int) -> frozenset[str]:
    rows = conn.execute(select(watchlist.c.key).where(watchlist.c.subscriber_id == subscriber_id))
    return frozenset(rows.scalars())


def lock_subscriber(conn: Connection, subscriber_id: int) -> None:
    """Hold the subscriber's row until the transaction ends (PostgreSQL), so that two requests
    cannot both pass a cap check and both add; SQLite's single writer already serializes them."""
    conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id).with_for_update())


def watchlist_cap(conn: Connection, subscriber_id: int) -> int:
    """How many keys the subscriber may watch: their plan's ``watchlist``, else :data:`MAX_WATCHLIST`."""
    sub = current_subscription(conn, subscriber_id)
    if sub is not None:
        row = conn.execute(
            select(plans.c.terms).where(plans.c.id == sub.plan_id, plans.c.version == sub.plan_version)
        ).first()
        cap = (row.terms or {}).get("watchlist") if row is not None else None
        if isinstance(cap, int):
            return min(cap, MAX_WATCHLIST)
    return MAX_WATCHLIST


def set_watchlist(conn: Connection, subscriber_id: int, keys: Iterable[str], now: datetime) -> frozenset[str]:
    """Replace the watchlist; more keys than :func:`watchlist_cap` allows is a LimitError."""
    wanted = frozenset(keys)
    lock_subscriber(conn, subscriber_id)
    cap = watchlist_cap(conn, subscriber_id)
    if len(wanted) > cap:
        raise LimitError(f"your plan watches at most {cap} keys; you sent {len(wanted)}", cap=cap)
    conn.execute(delete(watchlist).where(watchlist.c.subscriber_id == subscriber_id))
    if wanted:
        conn.execute(watchlist.insert(), [{"subscriber_id": subscriber_id, "key": k, "added_at": now} for k in wanted])
    return wanted


def get_preferences(conn: Connection, subscriber_id: int) -> dict[str, Preferences]:
    rows = conn.execute(select(preferences).where(preferences.c.subscriber_id == subscriber_id))
    return {r.channel: preferences_of(r) for r in rows}


def preferences_of(r: Any) -> Preferences:
    """A ``preferences`` row as a record."""
    mode, group = r.quiet_mode or "hold", r.group_seconds or None
    return Preferences(r.channel, r.enabled, r.quiet_start, r.quiet_end, r.daily_budget, mode, group)


def set_preference(conn: Connection, subscriber_id: int, prefs: Preferences) -> None:
    values = {
        "enabled": prefs.enabled,
        "quiet_start": prefs.quiet_start,
        "quiet_end": prefs.quiet_end,
        "daily_budget": prefs.daily_budget,
        "quiet_mode": prefs.quiet_mode,
        "group_seconds": prefs.group_seconds or None,
    }
    done = conn.execute(
        update(preferences)
        .where(preferences.c.subscriber_id == subscriber_id, preferences.c.channel == prefs.channel)
        .values(**values)
    )
    if not done.rowcount:
        conn.execute(preferences.insert().values(subscriber_id=subscriber_id, channel=prefs.channel, **values))


@dataclass(frozen=True, slots=True)
class SubscriberSummary:
    subscriber: Subscriber
    subscription: Subscription | None
    watchlist: frozenset[str]


def list_subscribers(
    conn: Connection, *, after_id: int = 0, limit: int = 100, search: str | None = None
) -> list[SubscriberSummary]:
    """Subscribers in id order with their open subscription (admin listing and CSV export)."""
    query = select(subscribers).where(subscribers.c.id > after_id)
    if search:
        query = query.where(subscribers.c.email.contains(search.lower(), autoescape=True))
    rows = conn.execute(query.order_by(subscribers.c.id).limit(limit)).all()
    out = []
    for row in rows:
        out.append(SubscriberSummary(_subscriber(row), current_subscription(conn, row.id), get_watchlist(conn, row.id)))
    return out


def count_subscribers(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(subscribers)).scalar_one())


def open_subscriptions(conn: Connection) -> list[tuple[Subscription, Subscriber]]:
    """Every open subscription with its subscriber (for audiences and revenue views: every
    subscriber at once, read raw, each distinct time converted once)."""
    rows = conn.execute(
        select(
            *raw_columns(subscriptions, _SUBSCRIPTION_FIELDS, qualified=True),
            *raw_columns(subscribers, ("email", "created_at", "confirmed_at", "timezone"), qualified=True),
        )
        .select_from(subscriptions)
        .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
        .where(subscriptions.c.ended_at.is_(None))
    ).all()
    at = reader(conn, subscribers.c.created_at)
    return [
        (
            Subscription(r[0], r[1], r[2], r[3], r[4], at(r[5]), at(r[6]), at(r[7]), at(r[8]), at(r[9]), r[10], r[11]),
            Subscriber(r[1], r[12], at(r[13]), at(r[14]), r[15]),
        )
        for r in rows
    ]


def subscribers_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, Subscriber]:
    wanted = list(ids)
    if not wanted:
        return {}
    return {r.id: _subscriber(r) for r in conn.execute(select(subscribers).where(subscribers.c.id.in_(wanted)))}


def open_subscriptions_of(conn: Connection, subscriber_ids: Iterable[int]) -> dict[int, Subscription]:
    """Each subscriber's open subscription (the newest, as ``current_subscription``)."""
    wanted = list(subscriber_ids)
    if not wanted:
        return {}
    rows = conn.execute(
        select(subscriptions)
        .where(subscriptions.c.subscriber_id.in_(wanted), subscriptions.c.ended_at.is_(None))
        .order_by(subscriptions.c.id)
    )
    return {r.subscriber_id: _subscription(r) for r in rows}  # later ids win: the newest


def subscribers_with_subscriptions(
    conn: Connection, subscriber_ids: Iterable[int]
) -> tuple[dict[int, Subscriber], dict[int, Subscription], dict[tuple[int, str], int]]:
    """:func:`subscribers_by_id`, :func:`open_subscriptions_of` and :func:`own_daily_budgets` in
    one query (a delivery round's subscribers: thousands, read raw, each distinct time converted once)."""
    wanted = list(subscriber_ids)
    if not wanted:
        return {}, {}, {}
    s, p = subscriptions.c, preferences.c
    query = (
        select(
            *raw_columns(subscribers, _SUBSCRIBER_FIELDS, qualified=True),
            *raw_columns(subscriptions, _SUBSCRIPTION_FIELDS, qualified=True),
            p.channel,
            p.daily_budget,
        )
        .select_from(
            subscribers.outerjoin(
                subscriptions, and_(s.subscriber_id == subscribers.c.id, s.ended_at.is_(None))
            ).outerjoin(preferences, and_(p.subscriber_id == subscribers.c.id, p.daily_budget.is_not(None)))
        )
        .where(among(conn, subscribers.c.id, wanted))
        .order_by(s.id)
    )
    at = reader(conn, subscribers.c.created_at)
    people: dict[int, Subscriber] = {}
    holdings: dict[int, Subscription] = {}
    budgets: dict[tuple[int, str], int] = {}
    for r in conn.execute(query).all():
        person = r[0]
        if person not in people:
            people[person] = Subscriber(person, r[1], at(r[2]), at(r[3]), r[4])
        sub_id = r[5]
        if sub_id is not None and (person not in holdings or holdings[person].id != sub_id):
            holdings[person] = Subscription(  # later ids win: the newest, as open_subscriptions_of
                sub_id, r[6], r[7], r[8], r[9], at(r[10]), at(r[11]), at(r[12]), at(r[13]), at(r[14]), r[15], r[16]
            )
        if r[18] is not None:
            budgets[(person, r[17])] = int(r[18])
    return people, holdings, budgets


def watchlists_of(conn: Connection, subscriber_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    wanted = list(subscriber_ids)
    out: dict[int, set[str]] = {}
    if wanted:
        rows = conn.execute(
            select(watchlist.c.subscriber_id, watchlist.c.key).where(among(conn, watchlist.c.subscriber_id, wanted))
        )
        for subscriber_id, key in rows:
            out.setdefault(subscriber_id, set()).add(key)
    return {k: frozenset(v) for k, v in out.items()}


def every_watchlist(conn: Connection) -> dict[int, frozenset[str]]:
    """Every subscriber's watchlist (the fan-out's audience), by subscriber id; none: not in it."""
    out: dict[int, set[str]] = {}
    for subscriber_id, key in conn.execute(select(watchlist.c.subscriber_id, watchlist.c.key)):
        out.setdefault(subscriber_id, set()).add(key)
    return {k: frozenset(v) for k, v in out.items()}


def every_preference(conn: Connection) -> dict[tuple[int, str], Preferences]:
    """Every stored notification preference, by (subscriber id, channel)."""
    return {(r.subscriber_id, r.channel): preferences_of(r) for r in conn.execute(select(preferences))}


def own_daily_budgets(conn: Connection, subscriber_ids: Iterable[int]) -> dict[tuple[int, str], int]:
    """The daily budgets subscribers set themselves, by (subscriber id, channel) (unset ones left out)."""
    wanted = list(subscriber_ids)
    if not wanted:
        return {}
    query = select(preferences.c.subscriber_id, preferences.c.channel, preferences.c.daily_budget).where(
        among(conn, preferences.c.subscriber_id, wanted), preferences.c.daily_budget.is_not(None)
    )
    return {(r.subscriber_id, r.channel): int(r.daily_budget) for r in conn.execute(query)}


def get_subscription(conn: Connection, subscription_id: int) -> Subscription | None:
    row = conn.execute(select(subscriptions).where(subscriptions.c.id == subscription_id)).first()
    return _subscription(row) if row is not None else None


def due_subscriptions(conn: Connection, provider: str, now: datetime) -> list[int]:
    """Ids of ``provider``'s subscriptions that have not ended and whose period is over at ``now``."""
    query = select(subscriptions.c.id).where(
        subscriptions.c.provider == provider, subscriptions.c.ended_at.is_(None), subscriptions.c.period_end <= now
    )
    return [int(i) for i in conn.execute(query.order_by(subscriptions.c.id)).scalars()]
