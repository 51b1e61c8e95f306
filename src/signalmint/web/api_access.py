"""Who may call the API, how fast and how often: one policy for API keys and browser sessions.

API access is a plan term (see README, "Plans"): a plan with ``api`` in its channels sells
the API at its ``rate_per_second`` and ``burst`` (a token bucket per subscriber), with
``api_quota`` calls a calendar month, then ``overage_price`` a call (paid through Stripe's
meter, else from the subscriber's prepaid credits, else refused). A plan without it gets
403 on the data routes, naming the plans that include it. The terms hold for every
credential of a subscriber: an API key and a signed-in browser share one bucket and one
monthly count, so a session cookie is not a second, free API.

Three doors, one per kind of route:

- :func:`read_viewer`: the data routes (signals, automations, plans). Subscribers need the
  API term and spend one call of its rate and quota; the public (no credential) gets the
  public view, limited per client address; admins are not limited.
- :func:`api_viewer`: the account routes under ``/api/v1/me`` and ``/api/v1/admin``. Open
  to every plan (a free subscriber manages their watchlist too), within the plan's bucket.
- :func:`stream_viewer`: ``/api/v1/stream``. With a key it is an API call like the others;
  from a browser session it is the dashboard's own live feed: outside the quota, but bounded
  by its own small bucket (opening streams) and :data:`LIVE_STREAMS` open streams.

The limit headers are kept on ``request.state.limit_headers``; the app's edge middleware adds
them to every answer (FastAPI merges no dependency headers into a ready-made ``Response``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException, Request

from ..access import QuotaDecision, is_entitled, quota_decision
from ..billing.credits import pay_overage
from ..billing.usage import month_of
from ..formatting import fmt_money
from ..records import Plan
from .auth import Viewer, resolve_viewer
from .context import AppContext, get_ctx
from .money import api_terms
from .security import client_address

__all__ = ["LIVE_BURST", "LIVE_RATE", "LIVE_STREAMS", "api_viewer", "no_api_message", "read_viewer", "stream_viewer"]

#: The dashboard's live feed, per subscriber: streams opened (a bucket of LIVE_BURST refilled at
#: LIVE_RATE a second: reloads and reconnects fit, a polling loop does not) and open at once.
LIVE_RATE = 0.5
LIVE_BURST = 10
LIVE_STREAMS = 8


def no_api_message(plan: Plan, on_sale: list[Plan]) -> str:
    """The 403 of a plan without API access: which plans on sale include it.

    >>> free = Plan(id="free", version=1, name="Free", automations=("*",))
    >>> pro = Plan(id="pro", version=1, name="Pro", automations=("*",), price=9900,
    ...            channels=frozenset({"web", "api"}), api_quota=10_000, overage_price=1, rate_per_second=20, burst=40)
    >>> no_api_message(free, [free, pro])
    'the Free plan does not include the API; Pro (10,000 calls/month, then $0.01 a call; up to 20 a second, \
bursts of 40) does: change plans at /dashboard/billing'
    >>> no_api_message(free, [free])
    'the Free plan does not include the API, and no plan on sale does'
    """
    offers = [p for p in on_sale if p.api and p.public]
    if not offers:
        return f"the {plan.name} plan does not include the API, and no plan on sale does"
    names = ", ".join(f"{p.name} ({api_terms(p)})" for p in offers)
    verb = "does" if len(offers) == 1 else "do"
    return f"the {plan.name} plan does not include the API; {names} {verb}: change plans at /dashboard/billing"


def _seconds_to_next_month(now: datetime) -> int:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return max(1, int((datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()))


def _inactive(viewer: Viewer) -> HTTPException:
    if viewer.api_key is not None:
        return HTTPException(403, "this key's subscription is not active")
    return HTTPException(403, "your subscription is not active: choose a plan at /signup to use the API")


async def _bucket(ctx: AppContext, viewer: Viewer, plan: Plan) -> dict[str, str]:
    """One token from the subscriber's bucket (shared by their keys and sessions, and replicas), or 429."""
    assert viewer.subscriber is not None
    decision = await ctx.limiter.acheck(f"sub:{viewer.subscriber.id}", plan.rate_per_second, plan.burst)
    if not decision.allowed:
        raise HTTPException(429, "rate limit exceeded; slow down", headers=decision.headers())
    return decision.headers()


async def _spend_call(ctx: AppContext, viewer: Viewer, plan: Plan, now: datetime, headers: dict[str, str]) -> None:
    """Count one call against the monthly quota, then overage (a meter event or credits), or 429."""
    assert viewer.subscriber is not None and viewer.subscription is not None and ctx.meter is not None
    month = month_of(now)
    quota = quota_decision(ctx.meter.used(viewer.subscriber.id, month), plan)
    metered = quota.overage and viewer.subscription.provider == "stripe"  # Stripe bills it: a meter event
    if quota.overage and not metered:  # else the wallet pays for the call, or it is refused
        currency = ctx.settings.billing.currency
        if not await ctx.db.write(pay_overage, viewer.subscriber.id, plan, currency, now):
            quota = QuotaDecision(allowed=False, overage=False, remaining=0)
    if not quota.allowed:
        more = f"; top up credits to keep calling at {fmt_money(plan.overage_price, plan.currency)} a call"
        raise HTTPException(
            429,
            f"the monthly quota of {plan.api_quota} calls is used up" + (more if plan.overage_price else ""),
            headers={**headers, "Retry-After": str(_seconds_to_next_month(now))},
        )
    ctx.meter.record(viewer.subscriber.id, month, overage=quota.overage, metered=metered)
    if quota.remaining is not None:
        headers["X-Quota-Remaining"] = str(quota.remaining)


async def _public(request: Request, ctx: AppContext) -> None:
    client = client_address(request)
    web = ctx.settings.web
    decision = await ctx.limiter.acheck(f"ip:{client}", web.public_rate_per_second, web.public_burst)
    if not decision.allowed:
        raise HTTPException(429, "rate limit exceeded; use an API key for more", headers=decision.headers())
    request.state.limit_headers = decision.headers()


async def read_viewer(request: Request) -> Viewer:
    """The caller of a data route, after the plan's API terms (any credential) or the public limit."""
    ctx = get_ctx(request)
    viewer = resolve_viewer(request)
    if viewer.kind == "subscriber":
        plan, subscription, subscriber = viewer.plan, viewer.subscription, viewer.subscriber
        assert subscriber is not None
        now = datetime.now(UTC)
        if plan is None or subscription is None or not is_entitled(subscription, plan, subscriber, now):
            raise _inactive(viewer)
        if not plan.api:
            raise HTTPException(403, no_api_message(plan, ctx.access.current()))
        headers = await _bucket(ctx, viewer, plan)
        await _spend_call(ctx, viewer, plan, now, headers)
        request.state.limit_headers = headers
    elif viewer.kind == "public":
        await _public(request, ctx)
    return viewer


async def api_viewer(request: Request) -> Viewer:
    """The caller of an account route (``/api/v1/me``, ``/api/v1/admin``), within the plan's bucket.

    A key's calls also count against an API plan's quota, as they always have; a session's
    do not (its account routes are the dashboard's), but it spends from the same bucket.
    """
    ctx = get_ctx(request)
    viewer = resolve_viewer(request)
    if viewer.kind == "subscriber":
        plan, subscription, subscriber = viewer.plan, viewer.subscription, viewer.subscriber
        assert subscriber is not None
        now = datetime.now(UTC)
        entitled = plan is not None and subscription is not None and is_entitled(subscription, plan, subscriber, now)
        if viewer.api_key is not None and not entitled:
            raise _inactive(viewer)
        if plan is None:  # a signed-in subscriber without a plan: the public's allowance
            await _public(request, ctx)
            return viewer
        headers = await _bucket(ctx, viewer, plan)
        if viewer.api_key is not None and plan.api:
            await _spend_call(ctx, viewer, plan, now, headers)
        request.state.limit_headers = headers
    elif viewer.kind == "public":
        await _public(request, ctx)
    return viewer


async def stream_viewer(request: Request) -> Viewer:
    """The caller of ``/api/v1/stream``: a key pays one API call; a session spends the live feed's budget."""
    ctx = get_ctx(request)
    viewer = resolve_viewer(request)
    if viewer.kind != "subscriber" or viewer.api_key is not None:
        viewer = await read_viewer(request)
    assert viewer.kind != "subscriber" or viewer.subscriber is not None
    if viewer.subscriber is not None:
        sid = viewer.subscriber.id
        if viewer.api_key is None:
            decision = await ctx.limiter.acheck(f"live:{sid}", LIVE_RATE, LIVE_BURST)
            if not decision.allowed:
                raise HTTPException(429, "too many live feeds opened; wait a moment", headers=decision.headers())
            request.state.limit_headers = decision.headers()
        if ctx.live_streams.get(sid, 0) >= LIVE_STREAMS:
            message = f"{LIVE_STREAMS} live streams are open already; close one"
            raise HTTPException(429, message, headers={"Retry-After": "5"})
    return viewer
