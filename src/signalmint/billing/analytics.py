"""Revenue analytics: MRR, churn, ARPU, trial conversion, payments and credits, per automation.

Pure functions over records that :func:`signalmint.store.revenue.load_revenue` reads; no I/O.
Every figure is per currency (dollars are never added to euros), money in integer minor units,
credits in micro-units of the credit currency. For a period ``[start, end)``:

- a subscription's state *as of* ``t`` is its last ``subscription_history`` row before ``t``;
- **MRR** as of ``t`` is the sum of those rows' ``mrr``; **ARR** is 12 × MRR;
- a subscriber is **paying** while one of their subscriptions has an MRR above 0;
- **new**: subscribers whose first paying row ever falls in the period;
- **churned**: paying at ``start``, paying on no subscription at ``end``;
  **churn rate** = churned / paying at ``start``;
- **ARPU** = MRR at ``end`` / paying subscribers at ``end``, rounded half up to a minor unit;
- **trial conversion** = trials that ended in the period and became paying / trials that ended in
  the period. A trial ends when its subscription leaves ``trialing`` (or ends); one left in
  ``trialing`` ends when its ``trial_end`` passes. It converted when the subscriber pays right after;
- **payments** made in the period: gross (paid or refunded, not failed), refunds (counted in the
  period of their payment), provider fees, and net = gross − refunds − fees;
- **credits** sold are top-ups, consumed are debits for API calls, alerts and reports.

Per automation, a subscription counts for every automation its plan covers (``"*"``: all of them),
so the automations' subscriber counts may add up to more than the total. Money is split instead:
the MRR of a plan's subscriptions, and payments for a plan, are divided equally among the
automations the plan covers, in whole minor units, the remainder going one unit each to the first
automations by name (:func:`split`), so the automations' money adds up to the total exactly. A
payment naming an automation goes to it whole. Money no automation can be tied to (a top-up, a
tip naming none, a plan covering none) is *unattributed*; credits count in the total only.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from ..records import CreditLine, HistoryPoint, LegacySubscription, PaymentLine, Plan, RevenueData

__all__ = [
    "CONSUMING",
    "CreditLine",
    "Figures",
    "HistoryPoint",
    "LegacySubscription",
    "PaymentLine",
    "PlanLine",
    "RevenueData",
    "RevenueReport",
    "Window",
    "buckets",
    "legacy_points",
    "mrr_at",
    "revenue_report",
    "split",
]

PAYING_STATES = frozenset({"active", "past_due", "canceled"})  # as store.accounts.PAYING_STATES
CLOSED_STATES = frozenset({"ended", "expired"})
CONSUMING = frozenset({"api_call", "alert", "report"})  # ledger reasons that spend credits
KINDS = ("subscription", "credits", "tip", "manual")
UNATTRIBUTED = ""  # the scope of money no automation can be tied to
DAILY_UP_TO = timedelta(days=62)  # longer periods get a monthly series

Key = str | None  # None: the whole portfolio; "": unattributed; else an automation


# --- what comes out ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanLine:
    """Subscriptions on one plan as of the end of a window (``mrr``: this scope's share)."""

    plan_id: str
    subscribers: int
    paying: int
    trialing: int
    mrr: int


@dataclass(frozen=True, slots=True)
class Figures:
    """One scope's figures in one currency over one window (``by_plan``: the whole period's only)."""

    currency: str
    mrr_start: int = 0
    mrr: int = 0
    paying_start: int = 0
    paying: int = 0
    new: int = 0
    churned: int = 0
    trials_ended: int = 0
    trials_converted: int = 0
    gross: int = 0
    refunds: int = 0
    fees: int = 0
    paid_subscriptions: int = 0
    paid_credits: int = 0
    paid_tips: int = 0
    paid_manual: int = 0
    credits_sold: int | None = None
    credits_consumed: int | None = None
    by_plan: tuple[PlanLine, ...] = ()

    @property
    def arr(self) -> int:
        return 12 * self.mrr

    @property
    def net(self) -> int:
        return self.gross - self.refunds - self.fees

    @property
    def churn_rate(self) -> float | None:
        return self.churned / self.paying_start if self.paying_start else None

    @property
    def arpu(self) -> int | None:
        """MRR per paying subscriber, rounded half up.

        >>> Figures("usd", mrr=1000, paying=3).arpu, Figures("usd", mrr=1001, paying=2).arpu
        (333, 501)
        """
        return (2 * self.mrr + self.paying) // (2 * self.paying) if self.paying else None

    @property
    def trial_conversion(self) -> float | None:
        return self.trials_converted / self.trials_ended if self.trials_ended else None

    @property
    def empty(self) -> bool:
        money = (self.mrr_start, self.mrr, self.gross, self.refunds, self.fees)
        people = (self.paying_start, self.paying, self.new, self.churned, self.trials_ended)
        return not any(money) and not any(people) and not self.by_plan and not self.credits_sold


@dataclass(frozen=True, slots=True)
class Window:
    """Figures over ``[start, end)``: the total, each automation, and the unattributed remainder,
    each as one :class:`Figures` per currency (in the report's currency order)."""

    start: datetime
    end: datetime
    total: tuple[Figures, ...]
    automations: tuple[tuple[str, tuple[Figures, ...]], ...]
    unattributed: tuple[Figures, ...] | None


@dataclass(frozen=True, slots=True)
class RevenueReport:
    start: datetime
    end: datetime
    step: str  # "day" | "month": the series' bucket size
    currencies: tuple[str, ...]
    credit_currency: str
    period: Window
    series: tuple[Window, ...]


# --- pure helpers ---------------------------------------------------------------------------------


def split(amount: int, names: Sequence[str]) -> dict[str, int]:
    """``amount`` in equal whole parts, the remainder one unit each to the first ``names``.

    >>> split(1000, ["a", "b", "c"])
    {'a': 334, 'b': 333, 'c': 333}
    >>> sum(split(7, ["x", "y"]).values()), split(5, ["only"])
    (7, {'only': 5})
    """
    part, rest = divmod(amount, len(names))
    return {name: part + (1 if i < rest else 0) for i, name in enumerate(names)}


def buckets(start: datetime, end: datetime) -> tuple[str, list[tuple[datetime, datetime]]]:
    """The series' windows: UTC days for periods up to 62 days, calendar months beyond.

    >>> step, parts = buckets(datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
    >>> step, [f"{a:%m-%d}..{b:%m-%d}" for a, b in parts]
    ('month', ['01-15..02-01', '02-01..03-01', '03-01..04-01', '04-01..05-01', '05-01..06-01'])
    >>> step, parts = buckets(datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 3, 6, tzinfo=UTC))
    >>> step, len(parts), parts[0][1]
    ('day', 3, datetime.datetime(2024, 1, 2, 0, 0, tzinfo=datetime.timezone.utc))
    """
    step = "day" if end - start <= DAILY_UP_TO else "month"
    edges = [start]
    cursor = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while True:
        if step == "day":
            cursor += timedelta(days=1)
        else:
            cursor = cursor.replace(day=1)
            cursor = cursor.replace(year=cursor.year + cursor.month // 12, month=cursor.month % 12 + 1)
        if cursor >= end:
            break
        if cursor > start:
            edges.append(cursor)
    edges.append(end)
    return step, list(pairwise(edges))


def legacy_points(sub: LegacySubscription, plan: Plan | None, now: datetime) -> list[HistoryPoint]:
    """The history a subscription from before migration 0005 would have, rebuilt from its row.

    Only its current row is known, so: a subscription with a ``trial_end`` was ``trialing`` from
    its start (until ``trial_end``, if that passed before it ended or before ``now``); otherwise
    it was in its current state from its start. An ended one was ``comped`` if an operator comped
    it, else ``active`` (its state before it ended is lost); then it ended at ``ended_at``.
    """
    monthly = plan.monthly if plan is not None else 0
    currency = plan.currency if plan is not None else "usd"
    final = sub.state if sub.ended_at is None else "comped" if sub.origin == "comp" else "active"
    phases: list[tuple[datetime, str]] = []
    if sub.trial_end is not None:
        phases.append((sub.started_at, "trialing"))
        if final != "trialing" and sub.trial_end < (sub.ended_at or now):
            phases.append((max(sub.trial_end, sub.started_at), final))
    else:
        phases.append((sub.started_at, final))
    if sub.ended_at is not None:
        phases.append((sub.ended_at, "ended"))
    return [
        HistoryPoint(
            sub.id,
            sub.subscriber_id,
            sub.plan_id,
            sub.plan_version,
            state,
            monthly if state in PAYING_STATES else 0,
            currency,
            at,
        )
        for at, state in phases
    ]


# --- the computation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TrialEnd:
    at: datetime
    currency: str
    keys: tuple[Key, ...]  # the scopes the trial counts in
    converted: frozenset[Key]  # the scopes the subscriber pays in right after


@dataclass
class _Standing:
    """Who pays what as of one moment, by (scope, currency)."""

    paying: dict[tuple[Key, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    mrr: dict[tuple[Key, str], int] = field(default_factory=lambda: defaultdict(int))
    plans: dict[tuple[Key, str], dict[str, list[int]]] = field(default_factory=lambda: defaultdict(dict))

    def plan_line(self, key: tuple[Key, str], plan_id: str) -> list[int]:
        return self.plans[key].setdefault(plan_id, [0, 0, 0, 0])  # subscribers, paying, trialing, mrr


class _Book:
    """The history indexed for "as of" questions, built once per report."""

    def __init__(self, data: RevenueData) -> None:
        self.data = data
        self.latest: dict[str, Plan] = {}
        for (plan_id, _version), plan in sorted(data.plans.items()):
            self.latest[plan_id] = plan  # the highest version wins
        points = list(data.history)
        for sub in data.legacy:
            points += legacy_points(sub, data.plans.get((sub.plan_id, sub.plan_version)), data.now)
        points.sort(key=lambda p: p.at)  # stable: rows of one moment keep their id order
        self.by_sub: dict[int, list[HistoryPoint]] = defaultdict(list)
        self.subs_of: dict[int, list[int]] = defaultdict(list)
        self.names: set[str] = set()
        self._cover: dict[tuple[str, int], tuple[str, ...]] = {}
        for p in points:
            self.coverage(p.plan_id, p.plan_version)  # every automation a plan names gets a row
            if p.subscription_id not in self.by_sub:
                self.subs_of[p.subscriber_id].append(p.subscription_id)
            self.by_sub[p.subscription_id].append(p)
        self.times = {sid: [p.at for p in pts] for sid, pts in self.by_sub.items()}
        self.first_paying: dict[tuple[Key, str], list[datetime]] = defaultdict(list)
        seen: set[tuple[Key, str, int]] = set()
        for p in points:  # in time order: the first paying row of each (scope, currency, subscriber)
            if p.mrr > 0:
                for key in self.keys(p):
                    if (key, self.currency(p), p.subscriber_id) not in seen:
                        seen.add((key, self.currency(p), p.subscriber_id))
                        self.first_paying[key, self.currency(p)].append(p.at)
        self.trials = sorted(self._trial_ends(), key=lambda t: t.at)
        self.trial_times = [t.at for t in self.trials]
        self.paid = sorted((p for p in data.payments if p.status != "failed"), key=lambda p: p.created_at)
        self.paid_times = [p.created_at for p in self.paid]
        self.moves = sorted(data.credits, key=lambda c: c.created_at)
        self.move_times = [c.created_at for c in self.moves]
        self._standing: dict[tuple[datetime, bool], _Standing] = {}
        self.spans = {  # each subscription's first moment, and its last if that ended it
            sid: (pts[0].at, pts[-1].at if pts[-1].state in CLOSED_STATES else None) for sid, pts in self.by_sub.items()
        }

    def coverage(self, plan_id: str, version: int | None) -> tuple[str, ...]:
        """The automations a plan version covers, by name (``"*"`` expanded); unattributed if none."""
        found = self._cover.get((plan_id, version or 0))
        if found is None:
            plan = self.data.plans.get((plan_id, version)) if version is not None else None
            plan = plan or self.latest.get(plan_id)
            names = plan.expanded(self.data.automations).automations if plan else ()
            found = tuple(sorted(n for n in names if n != "*")) or (UNATTRIBUTED,)
            self.names.update(n for n in found if n != UNATTRIBUTED)
            self._cover[plan_id, version or 0] = found
        return found

    def keys(self, p: HistoryPoint) -> tuple[Key, ...]:
        return (None, *self.coverage(p.plan_id, p.plan_version))

    def currency(self, p: HistoryPoint) -> str:
        """A free plan's subscriptions count in the credit (main) currency, whatever the plan says."""
        plan = self.data.plans.get((p.plan_id, p.plan_version))
        return self.data.credit_currency if plan is not None and plan.free else p.currency

    def as_of(self, subscription_id: int, t: datetime, *, inclusive: bool = False) -> HistoryPoint | None:
        times = self.times[subscription_id]
        index = bisect_right(times, t) if inclusive else bisect_left(times, t)
        return self.by_sub[subscription_id][index - 1] if index else None

    def paying_keys(self, subscriber_id: int, t: datetime) -> frozenset[Key]:
        """The scopes a subscriber pays in once everything up to and including ``t`` happened."""
        keys: set[Key] = set()
        for sid in self.subs_of[subscriber_id]:
            p = self.as_of(sid, t, inclusive=True)
            if p is not None and p.mrr > 0:
                keys.update(self.keys(p))
        return frozenset(keys)

    def _trial_ends(self) -> Iterable[_TrialEnd]:
        for sid, pts in self.by_sub.items():
            for before, after in pairwise(pts):
                if before.state == "trialing" and after.state != "trialing":
                    converted = self.paying_keys(after.subscriber_id, after.at)
                    yield _TrialEnd(after.at, self.currency(before), self.keys(before), converted)
            last, ends = pts[-1], self.data.trial_ends.get(sid)
            if last.state == "trialing" and ends is not None and last.at < ends <= self.data.now:
                converted = self.paying_keys(last.subscriber_id, ends)
                yield _TrialEnd(ends, self.currency(last), self.keys(last), converted)

    def standing(self, t: datetime, *, plans: bool = False) -> _Standing:
        """Paying subscribers and MRR as of ``t``; with ``plans``, the subscriptions by plan too."""
        found = self._standing.get((t, plans))
        if found is not None:
            return found
        out = _Standing()
        groups: dict[tuple[str, tuple[str, ...], str], int] = defaultdict(int)
        for sid, (first, closed) in self.spans.items():
            if t <= first or (closed is not None and t > closed):
                continue  # not started yet, or long over
            p = self.as_of(sid, t)
            if p is None or p.state in CLOSED_STATES:
                continue
            currency, cover = self.currency(p), self.coverage(p.plan_id, p.plan_version)
            if p.mrr > 0:
                for key in (None, *cover):
                    out.paying[key, currency].add(p.subscriber_id)
                out.mrr[None, currency] += p.mrr
                groups[p.plan_id, cover, currency] += p.mrr
            for key in (None, *cover) if plans else ():
                line = out.plan_line((key, currency), p.plan_id)
                line[0] += 1
                line[1] += p.mrr > 0
                line[2] += p.state == "trialing"
                line[3] += p.mrr if key is None else 0
        for (plan_id, cover, currency), amount in groups.items():
            for name, share in split(amount, cover).items():
                out.mrr[name, currency] += share
                if plans:
                    out.plan_line((name, currency), plan_id)[3] += share
        self._standing[t, plans] = out
        return out

    def payments(self, a: datetime, b: datetime) -> dict[tuple[Key, str], dict[str, int]]:
        """Sums of the payments made in ``[a, b)`` by (scope, currency): gross and by kind, refunds, fees."""
        groups: dict[tuple[tuple[str, ...], str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for pay in self.paid[bisect_left(self.paid_times, a) : bisect_left(self.paid_times, b)]:
            cover = self.payment_cover(pay)
            sums = groups[cover, pay.currency.lower()]
            sums["gross"] += pay.amount
            sums[f"kind:{pay.kind}"] += pay.amount
            sums["refunds"] += pay.refunded
            sums["fees"] += pay.fee
        out: dict[tuple[Key, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (cover, currency), sums in groups.items():
            for what, amount in sums.items():
                out[None, currency][what] += amount
                for name, share in split(amount, cover).items():
                    out[name, currency][what] += share
        return out

    def payment_cover(self, pay: PaymentLine) -> tuple[str, ...]:
        """A payment's automation if it names one, else those of its plan, else unattributed."""
        if pay.automation:
            self.names.add(pay.automation)
            return (pay.automation,)
        return self.coverage(pay.plan_id, None) if pay.plan_id else (UNATTRIBUTED,)

    def credits(self, a: datetime, b: datetime) -> tuple[int, int]:
        sold = consumed = 0
        for line in self.moves[bisect_left(self.move_times, a) : bisect_left(self.move_times, b)]:
            if line.reason == "topup":
                sold += line.delta
            elif line.reason in CONSUMING and line.delta < 0:
                consumed -= line.delta
        return sold, consumed

    def window(
        self, a: datetime, b: datetime, names: Sequence[str], currencies: Sequence[str], *, plans: bool = False
    ) -> Window:
        start, end, money = self.standing(a), self.standing(b, plans=plans), self.payments(a, b)
        ended: dict[tuple[Key, str], int] = defaultdict(int)
        converted: dict[tuple[Key, str], int] = defaultdict(int)
        for trial in self.trials[bisect_left(self.trial_times, a) :]:
            if trial.at >= b:
                break
            for key in trial.keys:
                ended[key, trial.currency] += 1
                converted[key, trial.currency] += key in trial.converted
        sold, consumed = self.credits(a, b)

        def figures(key: Key, currency: str) -> Figures:
            k = (key, currency)
            firsts = self.first_paying.get(k, [])
            sums = money.get(k, {})
            credit = key is None and currency == self.data.credit_currency
            lines = sorted(end.plans.get(k, {}).items())
            return Figures(
                currency=currency,
                mrr_start=start.mrr.get(k, 0),
                mrr=end.mrr.get(k, 0),
                paying_start=len(start.paying.get(k, ())),
                paying=len(end.paying.get(k, ())),
                new=bisect_left(firsts, b) - bisect_left(firsts, a),
                churned=len(start.paying.get(k, set()) - end.paying.get(k, set())),
                trials_ended=ended.get(k, 0),
                trials_converted=converted.get(k, 0),
                gross=sums.get("gross", 0),
                refunds=sums.get("refunds", 0),
                fees=sums.get("fees", 0),
                paid_subscriptions=sums.get("kind:subscription", 0),
                paid_credits=sums.get("kind:credits", 0),
                paid_tips=sums.get("kind:tip", 0),
                paid_manual=sums.get("kind:manual", 0),
                credits_sold=sold if credit else None,
                credits_consumed=consumed if credit else None,
                by_plan=tuple(PlanLine(plan_id, *line) for plan_id, line in lines),
            )

        def row(key: Key) -> tuple[Figures, ...]:
            return tuple(figures(key, c) for c in currencies)

        return Window(a, b, row(None), tuple((n, row(n)) for n in names), row(UNATTRIBUTED))


def revenue_report(data: RevenueData, start: datetime, end: datetime) -> RevenueReport:
    """The figures over ``[start, end)`` (``end`` no later than ``data.now``), with a series of
    daily or monthly windows for the charts. The credit currency always has a row."""
    end = min(end, data.now)
    if not start < end:
        raise ValueError(f"an empty period: {start.isoformat()} to {end.isoformat()}")
    book = _Book(data)
    step, parts = buckets(start, end)
    seen = {book.currency(p) for pts in book.by_sub.values() for p in pts if p.at < end}
    seen |= {p.currency.lower() for p in data.payments if start <= p.created_at < end}
    seen.discard(data.credit_currency)
    currencies = (data.credit_currency, *sorted(seen))
    for pay in data.payments:  # automations named only by payments get a row too
        if start <= pay.created_at < end:
            book.payment_cover(pay)
    names = [*data.automations, *sorted(book.names - set(data.automations))]
    period = book.window(start, end, names, currencies, plans=True)
    series = [book.window(a, b, names, currencies) for a, b in parts]
    keep = any(w.unattributed is not None and not all(f.empty for f in w.unattributed) for w in [period, *series])

    def trimmed(window: Window) -> Window:
        return window if keep else Window(window.start, window.end, window.total, window.automations, None)

    return RevenueReport(
        start, end, step, currencies, data.credit_currency, trimmed(period), tuple(trimmed(w) for w in series)
    )


def mrr_at(data: RevenueData, moments: Sequence[datetime]) -> dict[str, list[int]]:
    """The portfolio's MRR per currency as of each of ``moments`` (one index for them all), as
    :func:`revenue_report` gives it for a window ending there."""
    book = _Book(data)
    out: dict[str, list[int]] = defaultdict(lambda: [0] * len(moments))
    for i, moment in enumerate(moments):
        for (key, currency), amount in book.standing(moment).mrr.items():
            if key is None:
                out[currency][i] = amount
    return dict(out)
