"""Entitlement decisions for one signal over a whole audience at once.

:func:`~signalmint.access.entitlements.deliver_at` decides for one subscription. An
:class:`Audience` compiles many subscriptions into columns once, then decides each signal in
a few numpy operations with exactly the same answers (tested row by row, and by hypothesis
over random populations).

Compiling folds every rule that does not depend on the signal into one ``deadline`` per
subscription (int64 nanoseconds, UTC): the subscription is entitled at ``now`` iff
``now < deadline``. Confirmation, matching ids and the state pick the date: ``trial_end``,
``period_end``, ``past_due_since`` plus the grace days, "for ever" or "never". Keys: a plan
allows every key, a fixed list (one boolean per plan and key), or a capped watchlist per
subscriber (an inverted index from key to subscriptions).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from ..records import Plan, Signal, Subscriber, Subscription
from .entitlements import allowed_keys

__all__ = ["Audience", "Decisions", "Row"]

#: One subscription as :meth:`Audience.build` takes it: with its plan, subscriber, watchlist.
Row = tuple[Subscription, Plan, Subscriber, AbstractSet[str]]

Int64Array = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_NEVER = np.iinfo(np.int64).min  # now < _NEVER for no now
_FOREVER = np.iinfo(np.int64).max  # now < _FOREVER for every now an aware datetime can give
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY_NS = 86_400 * 10**9
_ALL, _FIXED, _CHOSEN = 0, 1, 2  # how a plan picks its keys


def _ns(value: datetime) -> int:
    """Nanoseconds since the epoch, as a Python int (may not fit in int64)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is naive: give it a timezone (UTC)")
    return (value - _EPOCH) // _US * 1000


def _ns64(value: datetime, name: str) -> int:
    ns = _ns(value)
    if not _NEVER < ns < _FOREVER:
        raise ValueError(f"{name}={value!r} is outside datetime64[ns] (years 1678-2261)")
    return ns


def _clipped(value: datetime | None, none: int) -> int:
    """A date as an int64 deadline: None gives ``none``; out of range saturates (same order)."""
    return none if value is None else min(max(_ns(value), _NEVER + 1), _FOREVER)


@dataclass(frozen=True, slots=True)
class Decisions:
    """The subscriptions that receive one signal, in the audience's row order."""

    row: IndexArray
    subscription_id: Int64Array
    subscriber_id: Int64Array
    deliver_at: npt.NDArray[np.datetime64]  # datetime64[ns], UTC

    def __len__(self) -> int:
        return len(self.row)


class Audience:
    """Subscriptions compiled for :meth:`decide`; build with :meth:`build` or :meth:`from_columns`.

    >>> t0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    >>> free = Plan(id="free", version=1, name="Free", automations=("spikes",),
    ...             delay=timedelta(minutes=15), watchlist=5)
    >>> premium = Plan(id="premium", version=1, name="Premium", automations=("spikes",), price=2900)
    >>> people = [Subscriber(id=i, email=f"{i}@example.com", created_at=t0, confirmed_at=t0)
    ...           for i in (1, 2, 3)]
    >>> def sub(i, plan, state):
    ...     return Subscription(id=10 + i, subscriber_id=i, plan_id=plan.id, plan_version=1,
    ...                         state=state, started_at=t0)
    >>> audience = Audience.build([
    ...     (sub(1, free, "active"), free, people[0], {"AAPL"}),
    ...     (sub(2, premium, "active"), premium, people[1], set()),
    ...     (sub(3, premium, "expired"), premium, people[2], set()),
    ... ])
    >>> spike = Signal(automation="spikes", key="AAPL", time=t0, kind="spike", score=7.5, payload={})
    >>> d = audience.decide(spike, now=t0)
    >>> d.subscription_id.tolist(), d.deliver_at.astype(str).tolist()
    ([11, 12], ['2024-01-02T14:45:00.000000000', '2024-01-02T14:30:00.000000000'])
    """

    __slots__ = (
        "_all_ok",
        "_chosen",
        "_covers",
        "_deadline",
        "_delay_ns",
        "_fixed_ok",
        "_plan_index",
        "plans",
        "subscriber_id",
        "subscription_id",
    )

    def __init__(
        self,
        plans: Sequence[Plan],
        plan_index: IndexArray,
        subscription_id: Int64Array,
        subscriber_id: Int64Array,
        deadline: Int64Array,
        chosen: dict[str, IndexArray],
    ) -> None:
        self.plans = tuple(plans)
        self.subscription_id = subscription_id
        self.subscriber_id = subscriber_id
        self._plan_index = plan_index
        self._deadline = deadline
        self._chosen = chosen
        delays = [max(p.delay, timedelta(0)) // _US * 1000 for p in self.plans]
        if any(d >= _FOREVER for d in delays):
            raise ValueError("a plan's delay does not fit in datetime64[ns] (about 292 years)")
        self._delay_ns = np.array(delays, dtype=np.int64)
        modes = [_mode(p) for p in self.plans]
        self._all_ok = np.array([m == _ALL for m in modes], dtype=bool)
        self._covers: dict[str, BoolArray] = {}
        self._fixed_ok: dict[str, BoolArray] = {}
        for j, plan in enumerate(self.plans):
            for automation in plan.automations:
                self._covers.setdefault(automation, np.zeros(len(self.plans), dtype=bool))[j] = True
            if modes[j] == _FIXED:
                for key in plan.keys or ():
                    self._fixed_ok.setdefault(key, self._all_ok.copy())[j] = True

    def __len__(self) -> int:
        return len(self.subscription_id)

    def __repr__(self) -> str:
        return f"<Audience {len(self)} subscriptions, {len(self.plans)} plans>"

    @classmethod
    def build(cls, rows: Iterable[Row]) -> Audience:
        """Compile (subscription, plan, subscriber, watchlist) rows, in the order given."""
        plan_of: dict[Plan, int] = {}
        plan_index: list[int] = []
        ids: list[tuple[int, int]] = []
        deadlines: list[int] = []
        chosen: dict[str, list[int]] = {}
        last: tuple[Plan | None, int] = (None, 0)  # rows of one plan object come in runs: hash it once a run
        for i, (subscription, plan, subscriber, watchlist) in enumerate(rows):
            if plan is last[0]:
                j = last[1]
            else:
                j = plan_of.setdefault(plan, len(plan_of))
                last = (plan, j)
            plan_index.append(j)
            ids.append((subscription.id, subscription.subscriber_id))
            deadlines.append(_deadline(subscription, plan, subscriber))
            if _mode(plan) == _CHOSEN:
                for key in allowed_keys(plan, watchlist) or ():
                    chosen.setdefault(key, []).append(i)
        id_array = np.array(ids, dtype=np.int64).reshape(-1, 2)
        return cls(
            plans=list(plan_of),
            plan_index=np.array(plan_index, dtype=np.intp),
            subscription_id=id_array[:, 0].copy(),
            subscriber_id=id_array[:, 1].copy(),
            deadline=np.array(deadlines, dtype=np.int64),
            chosen={key: np.array(rows_, dtype=np.intp) for key, rows_ in chosen.items()},
        )

    @classmethod
    def from_columns(
        cls,
        plans: Sequence[Plan],
        *,
        plan_index: npt.ArrayLike,
        subscription_id: npt.ArrayLike,
        subscriber_id: npt.ArrayLike,
        state: npt.ArrayLike,
        confirmed: npt.ArrayLike,
        trial_end: npt.ArrayLike,
        period_end: npt.ArrayLike,
        past_due_since: npt.ArrayLike,
        watchlists: Sequence[AbstractSet[str]],
    ) -> Audience:
        """Compile columns (as the store reads them): dates are datetime64[ns] UTC, NaT for None.

        ``plan_index[i]`` points into ``plans``; ``confirmed[i]`` must be False when the
        subscriber is unconfirmed (or the row does not belong to them).
        """
        index = np.asarray(plan_index, dtype=np.intp)
        n = len(index)
        if n and (index.min() < 0 or index.max() >= len(plans)):
            raise ValueError("plan_index points outside plans")
        states = np.asarray(state, dtype=str)
        trial, period, since = (
            np.asarray(d, dtype="datetime64[ns]").view(np.int64) for d in (trial_end, period_end, past_due_since)
        )
        ok = np.asarray(confirmed, dtype=bool)
        if any(len(c) != n for c in (states, trial, period, since, ok, watchlists)):
            raise ValueError("every column must have one value per subscription")
        grace = np.array([min(max(p.grace_days * _DAY_NS, _NEVER), _FOREVER) for p in plans], dtype=np.int64)
        g = grace[index]
        grace_end = since + g  # int64 wraps on overflow: saturate instead
        grace_end = np.where((g > 0) & (grace_end < since), _FOREVER, grace_end)
        grace_end = np.where((g < 0) & (grace_end > since), _NEVER, grace_end)
        by_state = {
            "active": np.full(n, _FOREVER, dtype=np.int64),
            "trialing": trial,
            "canceled": period,
            "past_due": np.where(since == _NEVER, _NEVER, grace_end),
            "comped": np.where(period == _NEVER, _FOREVER, period),  # NaT: for ever
        }
        deadline = np.full(n, _NEVER, dtype=np.int64)  # expired and unknown states: never
        for name, column in by_state.items():
            hit = states == name
            deadline[hit] = column[hit]
        deadline[~ok] = _NEVER
        chosen: dict[str, list[int]] = {}
        by_watchlist = np.array([_mode(p) == _CHOSEN for p in plans], dtype=bool)
        for i in np.flatnonzero(by_watchlist[index]).tolist():
            for key in allowed_keys(plans[index[i]], watchlists[i]) or ():
                chosen.setdefault(key, []).append(i)
        return cls(
            plans=plans,
            plan_index=index,
            subscription_id=np.asarray(subscription_id, dtype=np.int64),
            subscriber_id=np.asarray(subscriber_id, dtype=np.int64),
            deadline=deadline,
            chosen={key: np.array(rows, dtype=np.intp) for key, rows in chosen.items()},
        )

    def decide(self, signal: Signal, now: datetime) -> Decisions:
        """The subscriptions that receive ``signal``, and when: ``deliver_at`` per row, at once."""
        now_ns = _ns64(now, "now")
        time_ns = _ns64(signal.time, "signal.time")
        covers = self._covers.get(signal.automation)
        if covers is None or len(self) == 0:
            return self._take(np.zeros(0, dtype=np.intp), time_ns)
        gate = covers & self._fixed_ok.get(signal.key, self._all_ok)  # per plan
        ok = gate[self._plan_index]
        rows = self._chosen.get(signal.key)
        if rows is not None:
            ok[rows] = covers[self._plan_index[rows]]
        ok &= self._deadline > now_ns
        return self._take(np.flatnonzero(ok), time_ns)

    def _take(self, rows: IndexArray, time_ns: int) -> Decisions:
        delay = self._delay_ns[self._plan_index[rows]]
        if len(delay) and time_ns > _FOREVER - int(delay.max()):
            raise ValueError("signal.time + delay is outside datetime64[ns] (after 2262)")
        return Decisions(
            row=rows,
            subscription_id=self.subscription_id[rows],
            subscriber_id=self.subscriber_id[rows],
            deliver_at=(delay + time_ns).view("datetime64[ns]"),
        )


def _mode(plan: Plan) -> int:
    return _CHOSEN if plan.watchlist is not None else _FIXED if plan.keys is not None else _ALL


def _deadline(subscription: Subscription, plan: Plan, subscriber: Subscriber) -> int:
    """The int64 instant before which the subscription is entitled (see ``is_entitled``)."""
    if subscription.plan_id != plan.id or subscription.plan_version != plan.version:
        return _NEVER
    if subscription.subscriber_id != subscriber.id or not subscriber.confirmed:
        return _NEVER
    state = subscription.state
    if state == "active":
        return _FOREVER
    if state == "trialing":
        return _clipped(subscription.trial_end, _NEVER)
    if state == "canceled":
        return _clipped(subscription.period_end, _NEVER)
    if state == "past_due":
        since = subscription.past_due_since
        if since is None:
            return _NEVER
        return min(max(_ns(since) + plan.grace_days * _DAY_NS, _NEVER + 1), _FOREVER)
    if state == "comped":
        return _clipped(subscription.period_end, _FOREVER)
    return _NEVER
