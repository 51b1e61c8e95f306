"""``POST /billing/stripe/webhook``: Stripe's events, verified, applied once.

Public, but authenticated by its ``Stripe-Signature`` header: the library checks the HMAC and
refuses timestamps older than ``billing.stripe.tolerance``; this route also refuses those as
far in the future, which the library lets through. Anything refused answers 400 and changes
nothing. An accepted event is applied by :mod:`signalmint.billing.stripe_events`: the reads
from Stripe first, then its "seen" mark and its effect in one transaction. A failure answers
500 with nothing committed, so Stripe sends the event again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import stripe
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from ...billing.service import Billing
from ...billing.stripe_events import Outcome, RetryLater, apply_event, fetch_for
from ...billing.stripe_provider import StripeProvider
from ..context import get_ctx
from ..openapi import errors

__all__ = ["router", "verify"]

router = APIRouter()
log = logging.getLogger("signalmint.billing.stripe")


def verify(body: bytes, header: str | None, secret: str, tolerance: timedelta, now: float) -> Mapping[str, Any]:
    """The event in ``body`` if ``header`` signs it with ``secret`` within ``tolerance`` of ``now``."""
    seconds = max(1, int(tolerance.total_seconds()))
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance=seconds)
    except stripe.SignatureVerificationError as exc:
        raise HTTPException(400, f"Stripe-Signature refused: {exc.user_message or exc}") from None
    except UnicodeDecodeError:
        raise HTTPException(400, "the body is not UTF-8") from None
    stamps = [int(part[2:]) for part in (header or "").split(",") if part.startswith("t=")]  # verified: one, an int
    if stamps[0] > now + seconds:
        raise HTTPException(400, f"Stripe-Signature refused: its timestamp is more than {seconds} s in the future")
    try:
        event = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not (
        isinstance(event, dict)
        and event.get("object") == "event"
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance((event.get("data") or {}).get("object"), dict)
    ):
        raise HTTPException(400, "the body is not a Stripe event")
    return event


@router.post(
    "/billing/stripe/webhook",
    tags=["billing"],
    summary="Stripe webhook events (authenticated by their Stripe-Signature)",
    response_class=JSONResponse,
    responses=errors(400, 404),
)
async def stripe_webhook(request: Request) -> JSONResponse:
    ctx = get_ctx(request)
    billing: Billing | None = ctx.billing
    config = ctx.settings.billing.stripe
    if billing is None or not isinstance(billing.provider, StripeProvider) or not config.webhook_secret:
        raise HTTPException(404, "Stripe is not the payment provider here")
    body = await request.body()
    event = verify(body, request.headers.get("stripe-signature"), config.webhook_secret, config.tolerance, time.time())
    try:
        fetched = await fetch_for(billing.provider, event)
        outcome: Outcome = await ctx.db.write(apply_event, ctx.settings, event, fetched, billing.clock())
    except RetryLater as exc:
        log.info("Stripe event %s (%s) not applied yet: %s", event["id"], event["type"], exc)
        return JSONResponse({"detail": f"not applied yet: {exc}"}, status_code=500)
    except Exception:
        log.exception(
            "Stripe event %s (%s) could not be applied; Stripe will send it again", event["id"], event["type"]
        )
        return JSONResponse({"detail": "could not apply the event; send it again"}, status_code=500)
    if outcome.subscriber_id is not None:
        billing.evict(outcome.subscriber_id)
    if outcome.dunning is not None:
        subscriber_id, plan = outcome.dunning
        await billing.notify_payment_failed(subscriber_id, plan, plan.grace_days)
    return JSONResponse({"received": True, "detail": outcome.detail})
