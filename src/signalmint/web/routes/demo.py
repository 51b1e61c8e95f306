"""The demo's own tools: the mail catcher's pages and the webhook request inspector.

Only in demo mode (``settings.demo``); elsewhere every route here is a 404.

- ``/demo/mail``: what the demo emailed (confirmations, magic links, alerts, digests), caught by
  :class:`~signalmint.demo.mailcatcher.MailCatcher`; ``/demo/mail/{id}`` shows one message: headers,
  the text with its links, the HTML in a sandboxed frame (``/demo/mail/{id}/body.html``: no
  scripts, no forms, images only from this site) and the escaped source, attachments.
- ``POST /demo/inspect/{token}``: the receiver a demo webhook may point at; ``GET`` shows what
  arrived there and whether each signature verifies with the endpoint's secret.
- ``POST /dashboard/inspector``: one click adds a webhook to a fresh inspector address.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from ...delivery.inspect import inspector_prefix
from ...demo.mailcatcher import Caught, MailCatcher
from ...store.outbox import endpoints_at
from ..context import AppContext, get_ctx
from ..core.deps import SessionMe as Me
from ..core.forms import check_csrf, read_form
from ..core.render import render
from ..delivery_view import endpoint_row
from ..endpoint_ops import EndpointIn, add
from ..inspector import Inspector, inspected, verify_signature

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_URL = re.compile(r"https?://[^\s<>\"']+")
_CID = re.compile(r"""(["'(])cid:([^"')\s]+)""")


def _catcher(ctx: AppContext) -> MailCatcher:
    if not ctx.settings.demo or ctx.catcher is None:
        raise HTTPException(404, "This site has no mail catcher: it is only part of `signalmint demo`.")
    return ctx.catcher


def _message(ctx: AppContext, message_id: int) -> Caught:
    found = _catcher(ctx).get(message_id)
    if found is None:
        raise HTTPException(404, "No such message: the catcher keeps only the latest ones.")
    return found


def _linked(text: str) -> Markup:
    """Plain text, escaped, with its web addresses made links (magic links are clickable)."""
    out, at = [], 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:)")
        out.append(html.escape(text[at : match.start()]))
        out.append(f'<a href="{html.escape(url)}" rel="noopener noreferrer">{html.escape(url)}</a>')
        at = match.start() + len(url)
    out.append(html.escape(text[at:]))
    return Markup("".join(out))


@router.get("/demo/mail", response_class=HTMLResponse)
def mailbox(request: Request, ctx: Ctx) -> HTMLResponse:
    messages = list(reversed(_catcher(ctx).messages()))
    assert ctx.catcher is not None
    return render(request, "demo_mail.html", nav_active="demo", messages=messages, catcher=ctx.catcher)


@router.get("/demo/mail/{message_id}", response_class=HTMLResponse)
def message_page(message_id: int, request: Request, ctx: Ctx) -> HTMLResponse:
    message = _message(ctx, message_id)
    text = message.text
    return render(
        request,
        "demo_message.html",
        nav_active="demo",
        message=message,
        text=_linked(text) if text is not None else None,
        has_html=message.html is not None,
        source=message.data.decode("utf-8", "replace"),
    )


@router.get("/demo/mail/{message_id}/body.html")
def message_html(message_id: int, request: Request, ctx: Ctx) -> Response:
    """The HTML body, for a sandboxed iframe: a CSP sandbox, no scripts, images from this site only."""
    message = _message(ctx, message_id)
    body = _CID.sub(lambda m: f"{m.group(1)}/demo/mail/{message_id}/cid/{m.group(2)}", message.html or "")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    policy = (
        f"sandbox allow-popups; default-src 'none'; img-src {origin} data:; style-src 'unsafe-inline'; "
        "frame-ancestors 'self'"  # only the message page may frame it
    )
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return HTMLResponse(body, headers=headers)


def _part(message: Caught, index: int | None) -> Response:
    found = message.part_bytes(index) if index is not None else None
    if found is None:
        raise HTTPException(404, "No such part in this message.")
    content_type, data = found
    safe = content_type if content_type.startswith("image/") and content_type != "image/svg+xml" else None
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}
    if safe is None:
        headers["Content-Disposition"] = "attachment"
    return Response(data, media_type=safe or "application/octet-stream", headers=headers)


@router.get("/demo/mail/{message_id}/parts/{index}")
def message_part(message_id: int, index: int, ctx: Ctx) -> Response:
    return _part(_message(ctx, message_id), index)


@router.get("/demo/mail/{message_id}/cid/{cid}")
def message_cid(message_id: int, cid: str, ctx: Ctx) -> Response:
    message = _message(ctx, message_id)
    return _part(message, message.part_by_cid(cid[:200]))


# -- the request inspector ------------------------------------------------------------------------


def _inspector(ctx: AppContext, token: str) -> Inspector:
    if not ctx.settings.demo or ctx.inspector is None or not TOKEN.fullmatch(token):
        raise HTTPException(404, "No request inspector here: it is only part of `signalmint demo`.")
    return ctx.inspector


@router.post("/demo/inspect/{token}")
async def receive(token: str, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Keep the request and check its signature with the secrets of the endpoint sending here."""
    inspector = _inspector(ctx, token)
    body = await request.body()
    prefix = inspector_prefix(ctx.settings) or ""
    found = await ctx.db.read(endpoints_at, "webhook", f"webhook+{prefix}{token}")
    secrets = [s for endpoint in found for s in endpoint.secrets]
    headers = {k.lower(): v for k, v in request.headers.items()}
    valid, verdict = verify_signature(headers, body, secrets)
    inspector.record(token, inspected(request.method, list(request.headers.items()), body, valid, verdict))
    return {"received": True, "signature_valid": valid}


@router.get("/demo/inspect/{token}", response_class=HTMLResponse)
def inspect_page(token: str, request: Request, ctx: Ctx) -> HTMLResponse:
    inspector = _inspector(ctx, token)
    prefix = inspector_prefix(ctx.settings) or ""
    return render(
        request,
        "demo_inspector.html",
        nav_active="demo",
        url=f"{prefix}{token}",
        requests=inspector.requests(token),
        now=datetime.now(UTC),
    )


@router.post("/dashboard/inspector", response_class=HTMLResponse)
async def add_inspector(request: Request, ctx: Ctx, me: Me) -> Response:
    """One click: a webhook to a fresh inspector address; the page shows its secret once."""
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    prefix = inspector_prefix(ctx.settings)
    if prefix is None or ctx.inspector is None:
        raise HTTPException(404, "The request inspector is only part of `signalmint demo`.")
    url = prefix + ctx.inspector.new_token()
    made = await add(EndpointIn(channel="webhook", url=url), ctx, me)  # plan, count and SSRF checks
    (endpoint,) = await ctx.db.read(endpoints_at, "webhook", f"webhook+{url}")
    return render(
        request,
        "endpoint_created.html",
        nav_active="dashboard",
        viewer=me,
        csrf=me.csrf(ctx.pepper),
        endpoint=endpoint_row(endpoint, frozenset({"webhook"})),
        secret=made["secret"],
        inspector_url=url.removeprefix(ctx.settings.base_url.rstrip("/")),
    )
