"""A delivery round's claim and load in one statement (PostgreSQL).

On a busy machine a round's pickup latency is made of round trips: each one waits for the
server's backend and then for this process to be scheduled again, and on two loaded cores
that is tens of milliseconds apiece. :func:`claim_loaded` leases the due single rows (``FOR
UPDATE SKIP LOCKED``, as :func:`~signalmint.store.outbox.claim` does) and returns, in the
same statement, what a round reads about them: each row's endpoint, its signal and the
signal's automation, the subscriber, their newest open subscription and their own daily
budgets (rows :func:`~signalmint.store.signals.signals_with_automations`,
:func:`~signalmint.store.outbox.list_endpoints` and
:func:`~signalmint.store.accounts.subscribers_with_subscriptions` would read in three more).

It takes single rows only. When a group is due it leases nothing and returns None: the
caller claims with :func:`~signalmint.store.outbox.claim`, which orders singles and whole
groups together (the check and the lease are one statement, so they see the same rows). On
SQLite (no round trips to save) it returns None too.

Being one statement, it is atomic without a transaction around it: a worker runs it with
each statement committing alone (``Database.write(..., autocommit=True)``), which saves the
``BEGIN`` and ``COMMIT`` round trips; :func:`~signalmint.store.outbox.claim` does need one
(its row locks and a group's advisory lock last until the transaction ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, or_, select, true, update

from ..records import Automation, Delivery, Endpoint, Signal, Subscriber, Subscription
from .accounts import _subscriber, _subscription
from .outbox import _by_id, _delivery, _endpoint, due_pending, earliest_due, lease_expired, queue_fronts
from .signals import row_to_signal
from .tables import automations, deliveries, endpoints, preferences, signals, subscribers, subscriptions

__all__ = ["Loaded", "claim_loaded"]


@dataclass(slots=True)
class Loaded:
    """What :func:`claim_loaded` leased and read."""

    claimed: list[Delivery] = field(default_factory=list)
    signals: dict[int, Signal] = field(default_factory=dict)
    automations: dict[str, Automation] = field(default_factory=dict)
    endpoints: dict[int, Endpoint] = field(default_factory=dict)
    people: dict[int, Subscriber] = field(default_factory=dict)
    holdings: dict[int, Subscription] = field(default_factory=dict)  # subscriber -> newest open subscription
    own_budgets: dict[tuple[int, str], int] = field(default_factory=dict)  # (subscriber, channel) -> daily budget


class _Prefixed:
    """The columns of ``row`` named ``prefix`` + name, read by name (``r.id``, ``r._mapping["id"]``)."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Any, prefix: str, names: list[str]) -> None:
        self._mapping = {name: mapping[prefix + name] for name in names}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


def _labelled(prefix: str, *columns: Any) -> list[Any]:
    return [c.label(prefix + c.name) for c in columns]


def _statement() -> Any:
    """The claim (its parameters: ``now``, ``lease_until``, ``owner``, ``limit``), built once."""
    c = deliveries.c
    now = bindparam("now", type_=c.next_attempt_at.type)
    grouped = c.group_key.is_not(None)
    groups_due = or_(exists().where(due_pending(now), grouped), exists().where(lease_expired(now), grouped))
    oldest_pending, oldest_lease = queue_fronts()  # read for what reading them does: see queue_fronts
    flag = select(
        groups_due.label("groups_due"), oldest_pending.label("oldest_pending"), oldest_lease.label("oldest_lease")
    ).cte("flag")
    pick = earliest_due(now, bindparam("limit"), lock=True, unless=select(flag.c.groups_due).scalar_subquery())
    picked = pick.cte("picked").prefix_with("MATERIALIZED")  # locked once, exactly these rows
    leased = (
        update(deliveries)
        .where(c.id.in_(select(picked.c.id)))
        .values(
            status="sending",
            lease_until=bindparam("lease_until", type_=c.lease_until.type),
            lease_owner=bindparam("owner", type_=c.lease_owner.type),
            attempts=c.attempts + 1,
        )
        .returning(*deliveries.c)
        .cte("leased")
    )
    # each signal (and its automation) on the first of its rows only: read and decoded once
    firsts = select(leased.c.signal_id, func.min(leased.c.id).label("row_id")).group_by(leased.c.signal_id)
    first = firsts.cte("firsts")
    s, p, a = subscriptions.c, preferences.c, automations.c
    wanted = [s.id, s.subscriber_id, s.plan_id, s.plan_version, s.state, s.started_at, s.trial_end, s.period_end]
    wanted += [s.past_due_since, s.ended_at, s.provider, s.provider_ref]
    newest = (
        select(*wanted)
        .where(s.subscriber_id == leased.c.subscriber_id, s.ended_at.is_(None))
        .order_by(s.id.desc())
        .limit(1)
        .lateral("newest")
    )
    own = (
        select(func.array_agg(p.channel).label("channels"), func.array_agg(p.daily_budget).label("budgets"))
        .where(p.subscriber_id == leased.c.subscriber_id, p.daily_budget.is_not(None))
        .lateral("own")
    )
    joined = (
        leased.outerjoin(endpoints, endpoints.c.id == leased.c.endpoint_id)
        .outerjoin(first, first.c.row_id == leased.c.id)
        .outerjoin(signals, signals.c.id == first.c.signal_id)
        .outerjoin(automations, a.name == signals.c.automation)
        .outerjoin(subscribers, subscribers.c.id == leased.c.subscriber_id)
        .outerjoin(newest, true())
        .outerjoin(own, true())
    )
    return select(
        flag.c.groups_due,
        *leased.c,
        *_labelled("e_", *endpoints.c),
        *_labelled("s_", *signals.c),
        *_labelled("a_", a.name, a.title, a.description, a.source_kind, a.detector_kind, a.detector_options),
        *_labelled("p_", *subscribers.c),
        *_labelled("sub_", *newest.c),
        own.c.channels.label("own_channels"),
        own.c.budgets.label("own_budgets"),
    ).select_from(flag.outerjoin(joined, true()))


_CLAIM = _statement()
_NAMES = {prefix: [c.name for c in table.c] for prefix, table in (("e_", endpoints), ("s_", signals))}
_NAMES["p_"] = [c.name for c in subscribers.c]
_NAMES["sub_"] = [f.name for f in fields(Subscription)]


def claim_loaded(conn: Connection, owner: str, now: datetime, *, lease: timedelta, limit: int) -> Loaded | None:
    """Lease up to ``limit`` due single rows to ``owner`` and read what their round needs, in
    one statement; None (nothing leased) when a group is due, or on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    out = Loaded()
    values = {"now": now, "lease_until": now + lease, "owner": owner, "limit": limit}
    for r in conn.execute(_CLAIM, values):
        m = r._mapping
        if m["groups_due"]:
            return None  # (the flag row alone: nothing was leased)
        if m["id"] is None:  # the one row of a claim that leased nothing
            continue
        out.claimed.append(_delivery(r))
        if m["e_id"] is not None and m["e_id"] not in out.endpoints:
            out.endpoints[m["e_id"]] = _endpoint(_Prefixed(m, "e_", _NAMES["e_"]))
        if m["s_id"] is not None and m["s_id"] not in out.signals:
            out.signals[m["s_id"]] = row_to_signal(_Prefixed(m, "s_", _NAMES["s_"]))  # type: ignore[arg-type]
            name = m["a_name"]
            if name is not None and name not in out.automations:
                out.automations[name] = Automation(
                    name, m["a_title"], m["a_description"], m["a_source_kind"], m["a_detector_kind"],
                    m["a_detector_options"] or {},
                )  # fmt: skip
        sid = m["p_id"]
        if sid is not None and sid not in out.people:
            out.people[sid] = _subscriber(_Prefixed(m, "p_", _NAMES["p_"]))
            if m["sub_id"] is not None:
                out.holdings[sid] = _subscription(_Prefixed(m, "sub_", _NAMES["sub_"]))
            for channel, budget in zip(m["own_channels"] or (), m["own_budgets"] or (), strict=True):
                out.own_budgets[(sid, channel)] = int(budget)
    out.claimed.sort(key=_by_id)
    return out
