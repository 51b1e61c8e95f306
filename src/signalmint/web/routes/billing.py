"""Paying: subscribe to a plan, top up credits, tip; the test-mode checkout; the billing page.

Subscribing, topping up and the billing page need a subscriber's session; a tip can come
from anyone (the automation page's tip jar). Each form goes to the provider's checkout
(Stripe's hosted page, or this app's own test-mode page for the ``local`` provider and the
payment instructions for ``manual``), which comes back to ``/billing/done``.

A checkout belongs to whoever started it: its page and its Pay button answer 404 to anyone
else (a tip started by a visitor belongs to whoever holds its unguessable token).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...billing.credits import balance
from ...billing.service import Billing
from ...errors import AccessError
from ...money import fmt_money, parse_minor, parse_money
from ...records import Checkout
from ...store import Connection
from ...store.billing import list_payments
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx
from ..params import is_digits
from .account import anon_csrf, check_anon_csrf, check_csrf, read_form, redirect, render, set_csrf_cookie, throttle
from .dashboard import Me, standing

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]


def _billing(ctx: AppContext) -> Billing:
    if ctx.billing is None:
        raise HTTPException(404, "Payments are not set up on this site.")
    return ctx.billing


def _amount(text: str) -> int:
    """Minor units from a form field: ASCII digits only, e.g. ``500`` for 5.00."""
    try:
        return parse_minor(text)
    except ValueError as exc:
        raise AccessError(str(exc)) from None


def _owned(request: Request, ctx: AppContext, token: str) -> Checkout:
    """The checkout ``token`` names, if the caller may see it (else 404, whether or not it exists)."""
    checkout = _billing(ctx).checkout(token) if len(token) <= 64 else None
    if checkout is None:
        raise HTTPException(404, "No such checkout.")
    if checkout.subscriber_id is not None:
        viewer = resolve_viewer(request)
        if viewer.subscriber is None or viewer.subscriber.id != checkout.subscriber_id:
            raise HTTPException(404, "No such checkout.")
    return checkout


def billing_page(request: Request, ctx: AppContext, me: Viewer, *, status: int = 200, **extra: Any) -> HTMLResponse:
    assert me.subscriber is not None
    billing = _billing(ctx)
    subscriber_id = me.subscriber.id

    def read(conn: Connection) -> dict[str, Any]:
        return {
            "payments": list_payments(conn, subscriber_id=subscriber_id, limit=50),
            "balance": balance(conn, subscriber_id),
        }

    data = ctx.db.read_sync(read)
    now = datetime.now(UTC)
    plans = [p for p in ctx.access.current() if p.public]
    return render(
        request,
        "billing.html",
        status=status,
        nav_active="dashboard",
        csrf=me.csrf(ctx.pepper),
        plan=me.plan,
        subscription=me.subscription,
        standing=standing(me.subscription, me.plan, me.subscriber, now),
        plans=plans,
        test_mode=billing.test_mode,
        provider=billing.provider.name,
        packs=ctx.settings.billing.credits.packs,
        credits_currency=ctx.settings.billing.currency,
        **data,
        **extra,
    )


@router.get("/dashboard/billing", response_class=HTMLResponse)
def billing_overview(request: Request, ctx: Ctx, me: Me) -> HTMLResponse:
    return billing_page(request, ctx, me)


@router.get("/dashboard/ledger.csv")
def my_ledger(ctx: Ctx, me: Me) -> Response:
    """The subscriber's own credit statement."""
    from ...billing.credits import ledger_csv

    assert me.subscriber is not None
    text = ctx.db.read_sync(ledger_csv, me.subscriber.id, currency=ctx.settings.billing.currency)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="credits.csv"', "Cache-Control": "no-store"},
    )


@router.post("/billing/subscribe")
async def subscribe(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "plan", "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    try:
        _checkout, url = await _billing(ctx).subscribe(me.subscriber.id, form["plan"][:64])
    except AccessError as exc:
        return billing_page(request, ctx, me, status=400, error=str(exc))
    return redirect(url)


@router.post("/billing/credits")
async def top_up(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "amount", "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    try:
        _checkout, url = await _billing(ctx).top_up(me.subscriber.id, _amount(form["amount"]))
    except AccessError as exc:
        return billing_page(request, ctx, me, status=400, error=str(exc))
    return redirect(url)


@router.post("/billing/cancel")
async def cancel(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    sub = me.subscription
    if sub is None or sub.provider_ref is None or sub.state not in {"active", "trialing", "past_due"}:
        return billing_page(request, ctx, me, status=400, error="There is no paid plan to cancel.")
    await _billing(ctx).provider.cancel(sub)
    ctx.viewers.forget_subscriber(me.subscriber.id)
    return redirect("/dashboard/billing?saved=canceled")


@router.get("/billing/portal")
async def portal(request: Request, ctx: Ctx, me: Me) -> Response:
    """The provider's customer portal (cards, invoices, cancellation), or our billing page."""
    assert me.subscriber is not None
    billing = _billing(ctx)
    url = await billing.provider.portal(me.subscriber, billing._url("/dashboard/billing"))
    return redirect(url or "/dashboard/billing")


@router.get("/tip", response_class=HTMLResponse)
def tip_page(request: Request, ctx: Ctx, automation: str = "", amount: str = "") -> HTMLResponse:
    """The tip jar's form: an amount (suggested or your own), for an automation or the whole site."""
    tips = ctx.settings.billing.tips
    if not tips.enabled or ctx.billing is None:
        raise HTTPException(404, "Tips are not open on this site.")
    if automation and automation not in ctx.automation_names():
        raise HTTPException(404, f"No automation named {automation[:64]!r}.")
    viewer = resolve_viewer(request)
    signed_in = viewer.session is not None and viewer.subscriber is not None
    csrf = viewer.csrf(ctx.pepper) if signed_in else anon_csrf(request)
    response = render(
        request,
        "tip.html",
        nav_active="automation",
        csrf=csrf,
        automation=automation,
        amount=int(amount) if is_digits(amount) and len(amount) <= 9 else None,
        typed=fmt_money(int(amount), ctx.settings.billing.currency) if is_digits(amount) and len(amount) <= 9 else "",
        tips=tips,
        currency=ctx.settings.billing.currency,
        test_mode=ctx.billing.test_mode,
    )
    if not signed_in:
        set_csrf_cookie(response, ctx, csrf)
    return response


@router.post("/billing/tip")
async def tip(request: Request, ctx: Ctx) -> Response:
    """A tip from the tip jar: signed-in subscribers and visitors alike."""
    form = await read_form(request, "amount", "price", "automation", "csrf")
    viewer = resolve_viewer(request)
    if viewer.session and viewer.subscriber is not None:
        check_csrf(viewer, ctx, form["csrf"])
    else:
        check_anon_csrf(request, form["csrf"])
        throttle(request, ctx, "tip")
    automation = form["automation"][:64] or None
    if automation is not None and automation not in ctx.automation_names():
        raise HTTPException(400, f"No automation named {automation!r}.")
    if not ctx.settings.billing.tips.enabled:
        raise HTTPException(404, "Tips are not open on this site.")
    try:
        # "price" is what a person typed, in currency units ($5); "amount" a suggested tip's minor units
        typed = form["price"].strip()
        amount = parse_money(typed, ctx.settings.billing.currency) if typed else _amount(form["amount"])
        _checkout, url = await _billing(ctx).tip(
            amount,
            subscriber_id=viewer.subscriber.id if viewer.subscriber is not None else None,
            email=None,
            automation=automation,
        )
    except AccessError as exc:
        raise HTTPException(400, str(exc)) from None
    return redirect(url)


@router.get("/billing/checkout/{token}", response_class=HTMLResponse)
def checkout_page(request: Request, ctx: Ctx, token: str) -> HTMLResponse:
    """The test-mode card form (local provider) or the payment instructions (manual)."""
    checkout = _owned(request, ctx, token)
    billing = _billing(ctx)
    if checkout.provider != billing.provider.name or checkout.provider == "stripe":
        raise HTTPException(404, "No such checkout.")
    plan = billing.plan(checkout.plan_id) if checkout.plan_id else None
    csrf = anon_csrf(request)
    response = render(
        request,
        "checkout.html",
        nav_active="dashboard",
        checkout=checkout,
        plan=plan,
        provider=checkout.provider,
        csrf=csrf,
        instructions=ctx.settings.billing.manual_instructions,
    )
    set_csrf_cookie(response, ctx, csrf)
    return response


@router.post("/billing/checkout/{token}")
async def checkout_action(request: Request, ctx: Ctx, token: str) -> Response:
    """Pay (test mode) or cancel a local checkout."""
    form = await read_form(request, "action", "csrf")
    checkout = _owned(request, ctx, token)
    check_anon_csrf(request, form["csrf"])
    billing = _billing(ctx)
    if checkout.provider != "local" or billing.provider.name != "local":
        raise HTTPException(404, "No such checkout.")
    if form["action"] not in {"pay", "cancel"}:
        raise HTTPException(400, "Choose pay or cancel.")
    if checkout.status != "open":
        return redirect(f"/billing/done?checkout={token}")
    now = datetime.now(UTC)
    if form["action"] == "cancel":
        from ...store.billing import complete_checkout

        await ctx.db.write(complete_checkout, checkout.id, now, status="canceled")
        return redirect("/dashboard/billing" if checkout.subscriber_id else "/")
    from ...billing.local import LocalProvider

    provider = billing.provider
    assert isinstance(provider, LocalProvider)
    await ctx.db.write(provider.pay, checkout, now)
    if checkout.subscriber_id is not None:
        ctx.viewers.forget_subscriber(checkout.subscriber_id)
        if ctx.engine is not None and ctx.engine.fanout is not None:
            ctx.engine.fanout.invalidate()
    return redirect(f"/billing/done?checkout={token}")


@router.get("/billing/done", response_class=HTMLResponse)
def done(request: Request, ctx: Ctx, checkout: str = "") -> Response:
    """Where every checkout comes back: thanks, or 'waiting for the payment to be confirmed'.

    A paid plan goes on to the dashboard it bought, with no button to press in between.
    """
    found = _owned(request, ctx, checkout)
    if found.status == "complete" and found.kind == "subscription" and found.subscriber_id is not None:
        return redirect("/dashboard?saved=subscribed")
    return render(request, "billing_done.html", nav_active="dashboard", checkout=found, nonce=secrets.token_hex(4))
