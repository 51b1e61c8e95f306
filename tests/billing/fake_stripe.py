"""A small, honest stand-in for the Stripe API, for the tests (it does not ship in the wheel).

:class:`FakeStripe` is an ASGI app (serve it on 127.0.0.1 and point ``billing.stripe.base_url``
at it) that keeps Products, Prices, Customers, Checkout and portal sessions, Subscriptions,
invoices, charges and meter events in memory. Like Stripe, it honours ``Idempotency-Key``: the
same key with the same parameters replays the first answer (``Idempotent-Replayed: true``)
and creates nothing, the same key with other parameters is refused. Every request is recorded
(:attr:`FakeStripe.requests`), and :meth:`FakeStripe.lose_answers` makes the next calls to a
path take effect but lose their answer, as a crash or a dropped connection would.

The methods below the routes play Stripe's side (a payer completes a checkout, a renewal is
paid or fails, a refund) and return the events Stripe would send; :meth:`FakeStripe.signed`
signs one with a webhook secret like Stripe does. A month is 30 days here.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = ["FakeStripe", "Recorded"]

DAY = 86_400
_PATHS = frozenset({"products", "prices", "customers", "checkout/sessions", "subscriptions"})
MONTH = 30 * DAY


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the fake received it (``params`` decoded from the form or query)."""

    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]


def decode(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested values: ``a[b][0]=x`` -> ``{"a": {"b": ["x"]}}``.

    >>> decode([("line_items[0][price]", "p"), ("metadata[k]", "v"), ("limit", "1")])
    {'line_items': [{'price': 'p'}], 'metadata': {'k': 'v'}, 'limit': '1'}
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key) or [key]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if value and all(k.isdigit() for k in value):
            return [lists(value[k]) for k in sorted(value, key=int)]
        return {k: lists(v) for k, v in value.items()}

    result: dict[str, Any] = lists(root)
    return result


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message, **({"code": code} if code else {})}}


class FakeStripe:
    """The Stripe API in memory: see the module docstring."""

    def __init__(self, secret_key: str = "sk_test_fake", *, clock: Callable[[], float] = time.time) -> None:
        self.secret_key = secret_key
        self.clock = clock
        self.url = ""  # where it is served, for whoever serves it to fill in
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.meter_events: list[dict[str, Any]] = []
        self._private: dict[str, dict[str, Any]] = {}  # what Stripe keeps but does not show (line items...)
        self._replies: dict[str, tuple[str, str, str, int, dict[str, Any]]] = {}
        self._lose: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- serving ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        body = (await request.body()).decode()
        response = self._answer(request.method, request.url.path, request.url.query, body, request.headers)
        await response(scope, receive, send)

    def _answer(self, method: str, path: str, query: str, body: str, headers: Any) -> Response:
        pairs = parse_qsl(body if method == "POST" else query, keep_blank_values=True)
        params = decode(pairs)
        key = headers.get("idempotency-key")
        with self._lock:
            self.requests.append(Recorded(method, path, key, params))
            if headers.get("authorization") != f"Bearer {self.secret_key}":
                return JSONResponse(_Refused(401, "Invalid API Key provided").body, status_code=401)
            fingerprint = json.dumps(sorted(pairs))
            if method == "POST" and key is not None and key in self._replies:
                first_method, first_path, first_params, status, answer = self._replies[key]
                if (first_method, first_path, first_params) != (method, path, fingerprint):
                    message = "Keys for idempotent requests can only be used with the same parameters they were first used with."  # noqa: E501
                    refused = _Refused(400, message, kind="idempotency_error")
                    return JSONResponse(refused.body, status_code=400)
                return JSONResponse(answer, status_code=status, headers={"idempotent-replayed": "true"})
            try:
                status, answer = 200, self._route(method, path, params)
            except _Refused as exc:
                status, answer = exc.status, exc.body
            if method == "POST" and key is not None:
                self._replies[key] = (method, path, fingerprint, status, answer)
            if method == "POST" and self._lose.get(path, 0) > 0:
                self._lose[path] -= 1
                return JSONResponse({"error": {"type": "api_error", "message": "answer lost"}}, status_code=500)
            return JSONResponse(answer, status_code=status)

    def lose_answers(self, path: str, count: int = 1) -> None:
        """The next ``count`` POSTs to ``path`` take effect, then answer 500 as if cut off."""
        with self._lock:
            self._lose[path] = count

    def created(self, prefix: str) -> list[dict[str, Any]]:
        """Every object whose id starts with ``prefix`` (``cus_``, ``cs_``, ``price_``...)."""
        with self._lock:
            return [copy.deepcopy(o) for i, o in self.objects.items() if i.startswith(prefix)]

    def posts(self, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.startswith(path_prefix)]

    # -- the API ----------------------------------------------------------------------------------

    def _new(self, prefix: str, obj: dict[str, Any], ident: str | None = None) -> dict[str, Any]:
        ident = ident or f"{prefix}_{next(self._ids):06d}"
        obj = {"id": ident, "created": int(self.clock()), "livemode": False, **obj}
        self.objects[ident] = obj
        return obj

    def _get(self, ident: str, kind: str) -> dict[str, Any]:
        found = self.objects.get(ident)
        if found is None or found["object"] != kind:
            raise _Refused(404, f"No such {kind}: '{ident}'", code="resource_missing")
        return found

    def _route(self, method: str, path: str, p: dict[str, Any]) -> dict[str, Any]:
        rest = path.removeprefix("/v1/")
        head, _, ident = rest.rpartition("/")
        collection, one = (head, True) if head in _PATHS else (rest, False)
        handlers: dict[tuple[str, str, bool], Callable[[], dict[str, Any]]] = {
            ("POST", "products", False): lambda: self._create_product(p),
            ("GET", "products", True): lambda: self._get(ident, "product"),
            ("POST", "prices", False): lambda: self._create_price(p),
            ("GET", "prices", False): lambda: self._list_prices(p),
            ("POST", "customers", False): lambda: self._create_customer(p),
            ("POST", "checkout/sessions", False): lambda: self._create_session(p),
            ("GET", "checkout/sessions", True): lambda: self._get(ident, "checkout.session"),
            ("POST", "billing_portal/sessions", False): lambda: self._create_portal(p),
            ("GET", "subscriptions", True): lambda: self._get(ident, "subscription"),
            ("POST", "subscriptions", True): lambda: self._update_subscription(ident, p),
            ("GET", "invoice_payments", False): lambda: self._list_invoice_payments(p),
            ("POST", "billing/meter_events", False): lambda: self._meter_event(p),
        }
        handler = handlers.get((method, collection, one))
        if handler is None:
            raise _Refused(404, f"Unrecognized request URL ({method}: {path})")
        return handler()

    def _create_product(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("id") in self.objects:
            raise _Refused(400, f"Product already exists: {p['id']}", code="resource_already_exists")
        values = {"object": "product", "name": p["name"], "active": True, "metadata": p.get("metadata", {})}
        return self._new("prod", values, p.get("id"))

    def _create_price(self, p: dict[str, Any]) -> dict[str, Any]:
        self._get(p["product"], "product")
        key = p.get("lookup_key")
        for other in self.objects.values():
            if other["object"] == "price" and key and other.get("lookup_key") == key:
                if p.get("transfer_lookup_key") != "true":
                    raise _Refused(400, f"A price with lookup key {key} already exists", code="lookup_key_exists")
                other["lookup_key"] = None
        recurring = p.get("recurring")
        values = {
            "object": "price",
            "product": p["product"],
            "unit_amount": int(p["unit_amount"]),
            "currency": p["currency"],
            "recurring": {"interval": recurring["interval"], "interval_count": 1} if recurring else None,
            "type": "recurring" if recurring else "one_time",
            "lookup_key": key,
            "nickname": p.get("nickname"),
            "metadata": p.get("metadata", {}),
            "active": True,
        }
        return self._new("price", values)

    def _list(self, items: list[dict[str, Any]], url: str, p: dict[str, Any]) -> dict[str, Any]:
        limit = int(p.get("limit", 10))
        return {"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]}

    def _list_prices(self, p: dict[str, Any]) -> dict[str, Any]:
        keys = set(p.get("lookup_keys", []))
        found = [o for o in self.objects.values() if o["object"] == "price" and (not keys or o["lookup_key"] in keys)]
        return self._list(found, "/v1/prices", p)

    def _create_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._new("cus", {"object": "customer", "email": p.get("email"), "metadata": p.get("metadata", {})})

    def _create_session(self, p: dict[str, Any]) -> dict[str, Any]:
        if "customer" in p:
            self._get(p["customer"], "customer")
        total, currency = 0, "usd"
        for item in p.get("line_items") or []:
            price = self._get(item["price"], "price") if "price" in item else item["price_data"]
            total += int(price["unit_amount"]) * int(item.get("quantity", 1))
            currency = price["currency"]
        session = self._new(
            "cs_test",
            {
                "object": "checkout.session",
                "mode": p["mode"],
                "status": "open",
                "payment_status": "unpaid",
                "client_reference_id": p.get("client_reference_id"),
                "customer": p.get("customer"),
                "customer_email": p.get("customer_email"),
                "metadata": p.get("metadata", {}),
                "allow_promotion_codes": p.get("allow_promotion_codes") == "true",
                "amount_total": total,
                "currency": currency,
                "subscription": None,
                "payment_intent": None,
                "success_url": p.get("success_url"),
                "cancel_url": p.get("cancel_url"),
            },
        )
        session["url"] = f"https://checkout.stripe.com/c/pay/{session['id']}"
        self._private[session["id"]] = p
        return session

    def _create_portal(self, p: dict[str, Any]) -> dict[str, Any]:
        self._get(p["customer"], "customer")
        values = {"object": "billing_portal.session", "customer": p["customer"], "return_url": p.get("return_url")}
        session = self._new("bps", values)
        session["url"] = f"https://billing.stripe.com/p/session/{session['id']}"
        return session

    def _update_subscription(self, ident: str, p: dict[str, Any]) -> dict[str, Any]:
        sub = self._get(ident, "subscription")
        if "cancel_at_period_end" in p:
            sub["cancel_at_period_end"] = p["cancel_at_period_end"] == "true"
        return sub

    def _list_invoice_payments(self, p: dict[str, Any]) -> dict[str, Any]:
        wanted = (p.get("payment") or {}).get("payment_intent")
        found = [
            o
            for o in self.objects.values()
            if o["object"] == "invoice_payment" and wanted in (None, o["payment"].get("payment_intent"))
        ]
        return self._list(found, "/v1/invoice_payments", p)

    def _meter_event(self, p: dict[str, Any]) -> dict[str, Any]:
        if any(e["identifier"] == p["identifier"] for e in self.meter_events):
            message = f"An event with identifier {p['identifier']} already exists"
            raise _Refused(400, message, code="duplicate_meter_event")
        event = {
            "object": "billing.meter_event",
            "event_name": p["event_name"],
            "identifier": p["identifier"],
            "payload": p["payload"],
            "timestamp": int(p["timestamp"]),
            "created": int(self.clock()),
            "livemode": False,
        }
        self.meter_events.append(event)
        return event

    # -- Stripe's side: what payers and renewals do, and the events they cause ---------------------

    def event(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """An event as Stripe sends it, with a copy of ``obj`` as it is now."""
        return {
            "id": f"evt_{next(self._ids):06d}",
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(self.clock()),
            "type": kind,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)},
        }

    @staticmethod
    def signed(event: dict[str, Any], secret: str, *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of ``event`` delivered as Stripe does, signed with ``secret``."""
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
        return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}

    def _payment(self, amount: int, currency: str, customer: str | None) -> str:
        intent = self._new(
            "pi", {"object": "payment_intent", "amount": amount, "currency": currency, "status": "succeeded"}
        )
        charge = {
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "refunded": False,
            "currency": currency,
            "customer": customer,
            "payment_intent": intent["id"],
            "status": "succeeded",
        }
        self._new("ch", charge)
        return str(intent["id"])

    def _invoice(self, sub: dict[str, Any], *, paid: bool) -> list[dict[str, Any]]:
        price = sub["items"]["data"][0]["price"]
        amount = 0 if sub["status"] == "trialing" else price["unit_amount"]
        invoice = self._new(
            "in",
            {
                "object": "invoice",
                "customer": sub["customer"],
                "currency": price["currency"],
                "amount_due": amount,
                "amount_paid": amount if paid else 0,
                "status": "paid" if paid else "open",
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": sub["id"], "metadata": sub["metadata"]},
                },
            },
        )
        sub["latest_invoice"] = invoice["id"]
        if paid and amount > 0:
            intent = self._payment(amount, price["currency"], sub["customer"])
            payment = {"type": "payment_intent", "payment_intent": intent}
            self._new(
                "inpay",
                {
                    "object": "invoice_payment",
                    "invoice": invoice["id"],
                    "payment": payment,
                    "amount_paid": amount,
                    "status": "paid",
                },
            )
        return [self.event("invoice.paid" if paid else "invoice.payment_failed", invoice)]

    @staticmethod
    def _period(price: dict[str, Any]) -> int:
        return 365 * DAY if (price.get("recurring") or {}).get("interval") == "year" else MONTH

    def complete_checkout(self, session_id: str) -> list[dict[str, Any]]:
        """The payer pays: the subscription or payment is made; the events, in Stripe's order."""
        with self._lock:
            session = self._get(session_id, "checkout.session")
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}")
            params, now = self._private[session_id], int(self.clock())
            events: list[dict[str, Any]] = []
            if session["mode"] == "subscription":
                price = copy.deepcopy(self._get(params["line_items"][0]["price"], "price"))
                data = params.get("subscription_data") or {}
                trial = int(data.get("trial_period_days", 0))
                end = now + (trial * DAY if trial else self._period(price))
                item = {"object": "subscription_item", "price": price, "quantity": 1}
                sub = self._new(
                    "sub",
                    {
                        "object": "subscription",
                        "customer": session["customer"],
                        "status": "trialing" if trial else "active",
                        "items": {
                            "object": "list",
                            "data": [{**item, "current_period_start": now, "current_period_end": end}],
                        },
                        "trial_end": end if trial else None,
                        "cancel_at_period_end": False,
                        "cancel_at": None,
                        "ended_at": None,
                        "metadata": data.get("metadata", {}),
                        "latest_invoice": None,
                    },
                )
                sub["items"]["data"][0]["id"] = f"si_{next(self._ids):06d}"
                events.append(self.event("customer.subscription.created", sub))
                events += self._invoice(sub, paid=True)
                session.update(subscription=sub["id"], payment_status="no_payment_required" if trial else "paid")
            else:
                intent = self._payment(session["amount_total"], session["currency"], session["customer"])
                session.update(payment_intent=intent, payment_status="paid")
            session["status"] = "complete"
            events.append(self.event("checkout.session.completed", session))
            return events

    def renew(self, sub_id: str, *, paid: bool = True) -> list[dict[str, Any]]:
        """A new period starts and its invoice is paid (active) or fails (past_due)."""
        with self._lock:
            sub = self._get(sub_id, "subscription")
            item = sub["items"]["data"][0]
            item["current_period_start"] = item["current_period_end"]
            item["current_period_end"] += self._period(item["price"])
            sub["status"] = "active" if paid else "past_due"
            return [*self._invoice(sub, paid=paid), self.event("customer.subscription.updated", sub)]

    def pay_again(self, sub_id: str) -> list[dict[str, Any]]:
        """A retry of the open invoice succeeds: active again."""
        with self._lock:
            sub = self._get(sub_id, "subscription")
            invoice = self._get(sub["latest_invoice"], "invoice")
            invoice.update(status="paid", amount_paid=invoice["amount_due"])
            self._payment(invoice["amount_due"], invoice["currency"], sub["customer"])
            sub["status"] = "active"
            return [self.event("invoice.paid", invoice), self.event("customer.subscription.updated", sub)]

    def update(self, sub_id: str, *, price: str | None = None, **values: Any) -> list[dict[str, Any]]:
        """Change a subscription as the dashboard or portal would (its price, status, cancel_at_period_end)."""
        with self._lock:
            sub = self._get(sub_id, "subscription")
            if price is not None:
                sub["items"]["data"][0]["price"] = copy.deepcopy(self._get(price, "price"))
            sub.update(values)
            return [self.event("customer.subscription.updated", sub)]

    def cancel_now(self, sub_id: str) -> list[dict[str, Any]]:
        """The subscription ends (at period end, or canceled in the dashboard)."""
        with self._lock:
            sub = self._get(sub_id, "subscription")
            sub.update(status="canceled", ended_at=int(self.clock()))
            return [self.event("customer.subscription.deleted", sub)]

    def refund(self, payment_intent: str, amount: int | None = None) -> list[dict[str, Any]]:
        """Refund (part of) the charge of ``payment_intent``."""
        with self._lock:
            charge = next(
                o for o in self.objects.values() if o["object"] == "charge" and o["payment_intent"] == payment_intent
            )
            charge["amount_refunded"] += charge["amount"] - charge["amount_refunded"] if amount is None else amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return [self.event("charge.refunded", charge)]
