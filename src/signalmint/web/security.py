"""The web app's guards at the edge: who is really connecting, cross-site writes, security headers.

* :func:`client_address` is the one place that says which address a request came from.
  ``X-Forwarded-For`` is believed only when the connection comes from one of
  ``web.trusted_proxies`` (none by default), so a client cannot pick its own address to
  slip past a throttle. Every per-address limit keys on it.
* :class:`SecurityGuard` (an ASGI middleware, so no route can forget it) refuses a
  state-changing request (POST, PUT, PATCH, DELETE) that a session cookie authenticates
  unless it comes from this site: its ``Origin`` (or, without one, its ``Referer``) is the
  site's own; or, when neither says (``Origin: null``, as browsers send from a page with
  ``Referrer-Policy: no-referrer``), it carries a valid CSRF token (the ``csrf`` form field
  the HTML forms send, or an ``X-CSRF-Token`` header; outside /api/, a visitor form's
  double-submit token also counts, and that route checks it again). A foreign origin is
  refused even with a token. Requests with ``Authorization`` (API keys) are not
  cookie-authenticated and pass, as do the few signature-authenticated paths in
  :data:`EXEMPT_PATHS`. It also adds the security headers (:func:`security_headers`) to
  every answer.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import HTTPConnection, Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..accounts.credentials import check_csrf
from ..config import Settings

__all__ = [
    "EXEMPT_PATHS",
    "PAGE_POLICY",
    "SecurityGuard",
    "client_address",
    "forwarded_client",
    "security_headers",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SESSION_COOKIE = "sm_session"  # as in web.auth (not imported: that module needs FastAPI's request)
CSRF_COOKIE = "sm_csrf"  # the visitor's double-submit token (web/core/forms.py sets and checks it)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EXEMPT_PATHS = (
    "/billing/stripe/webhook",  # Stripe's signature, checked before the body is parsed
    "/api/v1/email/events",  # the email provider's bearer secret
    "/api/v1/ingest/",  # pushed data points: the automation's Standard Webhooks signature, no cookie
    "/unsubscribe/",  # RFC 8058 one-click: the HMAC token in the path, sent without cookies
    "/demo/inspect/",  # the demo's request inspector records whatever is posted to it (demo mode only)
)
CROSS_SITE = (
    "This request did not come from this site's own pages, so it was refused. "
    "Reload the page and send it again (API clients: use Authorization: Bearer <key>)."
)

# The pages use only their own script (/static/live.js), their own stylesheet, inline SVG and
# style="..." attributes, and the live feed's EventSource to this origin. form-action is left
# out on purpose: the billing forms answer with a redirect to the payment provider's checkout,
# which browsers check against form-action too.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PERMISSIONS = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)


# -- the client's address ------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in n for n in networks)


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the connecting ``peer``, unless it is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right (each proxy appends the address it saw)
    and the first hop that is not a trusted proxy is the client; whatever lies to its left
    was written by the client and is ignored.

    >>> proxies = [ipaddress.ip_network("10.0.0.0/8")]
    >>> forwarded_client("203.0.113.9", ["1.2.3.4"], proxies)  # not a proxy: the header is ignored
    '203.0.113.9'
    >>> forwarded_client("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.3"], proxies)
    '198.51.100.7'
    >>> forwarded_client("10.0.0.2", [], proxies)
    '10.0.0.2'
    """
    here = _address(peer)
    if not _trusted(here, trusted):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    nearest = str(here)
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:  # a hop a trusted proxy did not write: stop at the proxy
            return nearest
        if not _trusted(address, trusted):
            return str(address)
        nearest = str(address)
    return nearest


def client_address(connection: HTTPConnection) -> str:
    """The address a request came from, as every per-address throttle must see it."""
    peer = connection.client.host if connection.client else "unknown"
    settings: Settings = connection.app.state.ctx.settings
    trusted = settings.web.trusted_proxies
    if not trusted:
        return peer
    return forwarded_client(peer, connection.headers.getlist("x-forwarded-for"), _networks(tuple(trusted)))


# -- security headers ------------------------------------------------------------------------------


def security_headers(settings: Settings, *, policy: str = PAGE_POLICY) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries (a route's own ``Referrer-Policy`` wins)."""
    headers = [
        ("content-security-policy", policy),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("permissions-policy", PERMISSIONS),
        ("cross-origin-opener-policy", "same-origin"),
    ]
    if settings.base_url.startswith("https://"):
        headers.append(("strict-transport-security", "max-age=31536000"))
    return [(k.encode(), v.encode()) for k, v in headers]


_OURS = frozenset(
    {
        b"content-security-policy",
        b"x-frame-options",
        b"x-content-type-options",
        b"referrer-policy",
        b"permissions-policy",
        b"cross-origin-opener-policy",
        b"strict-transport-security",
    }
)


def _merge(message: Message, extra: list[tuple[bytes, bytes]]) -> None:
    """Add ``extra`` to a response start; a header the route set itself is kept (on the hot path: one scan)."""
    headers = list(message.get("headers") or ())
    own = [k for k, _ in headers if k in _OURS]
    if b"content-security-policy" in own:  # the route framed its own policy (frame-ancestors): no blanket DENY
        own.append(b"x-frame-options")
    message["headers"] = headers + (extra if not own else [(k, v) for k, v in extra if k not in own])


# -- cross-site requests ---------------------------------------------------------------------------


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, default ports dropped; None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def _cookie_header(scope: Scope) -> str:
    return next((v for k, v in scope.get("headers") or () if k == b"cookie"), b"").decode("latin-1")  # as Starlette


def _all_values(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` (a browser may hold several, for other paths or domains)."""
    return [v.strip().strip('"') for k, _, v in (p.strip().partition("=") for p in header.split(";")) if k == name]


class _Sender:
    """``send``, with the security headers added to the response start (a class: no closure per request)."""

    __slots__ = ("extra", "send")

    def __init__(self, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        self.send = send
        self.extra = extra

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            _merge(message, self.extra)
        await self.send(message)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class SecurityGuard:
    """Refuses cross-site writes that a session cookie would authenticate; adds security headers."""

    def __init__(self, app: ASGIApp, settings: Settings, pepper: bytes, max_bytes: int) -> None:
        self.app = app
        self.pepper = pepper
        self.max_bytes = max_bytes
        self.site = _origin(settings.base_url)
        self.https = settings.base_url.startswith("https://")
        self.headers = security_headers(settings)
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] in UNSAFE_METHODS and not path.startswith(EXEMPT_PATHS):
            try:
                receive = await self._same_site(scope, receive)
            except _Refused as refused:
                await self._refuse(scope, refused, send)
                return
        await self.app(scope, receive, _Sender(send, self.headers))

    # -- the cross-site check

    def _same_origin(self, scope: Scope, origin: str | None) -> bool:
        if origin is None:
            return False
        if origin == self.site:
            return True
        host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), "")
        schemes = {scope.get("scheme", "http")} | ({"https"} if self.https else set())
        return any(origin == _origin(f"{scheme}://{host}") for scheme in schemes if host)

    async def _same_site(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` (replaying a body read here) if the request may go on; raises _Refused if not."""
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or () if k != b"cookie"}
        header = _cookie_header(scope)
        session = cookie_parser(header).get(SESSION_COOKIE) if header else None  # the one the app will use
        if not session or headers.get(b"authorization"):
            return receive  # not authenticated by a cookie
        origin = headers.get(b"origin")
        # A browser sends "Origin: null" for a form posted from a page with Referrer-Policy:
        # no-referrer (ours, for personal pages), and then no Referer either: the token decides.
        claimed = (origin if origin != "null" else None) or headers.get(b"referer")
        if claimed:
            if self._same_origin(scope, _origin(claimed)):
                return receive
            raise _Refused(403, CROSS_SITE)
        # No usable Origin or Referer (not a browser, an old one, or "null"): a valid token is needed.
        token = headers.get(b"x-csrf-token", "")
        body: list[Message] = []
        if not token and headers.get(b"content-type", "").split(";")[0].strip().lower() == (
            "application/x-www-form-urlencoded"
        ):
            body = await self._read(receive)
            raw = b"".join(m.get("body", b"") for m in body)
            try:
                fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
            except (UnicodeDecodeError, ValueError):
                fields = []
            token = next((v for k, v in fields if k == "csrf"), "")
        if not (check_csrf(session, token, self.pepper) or self._visitor_form(scope["path"], header, token)):
            raise _Refused(403, CROSS_SITE)
        if not body:
            return receive
        pending = list(body)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return replay

    @staticmethod
    def _visitor_form(path: str, header: str, token: str) -> bool:
        """A visitor's form (sign-in, checkout, tip) posted by someone who also has a session: its
        double-submit token matches an ``sm_csrf`` cookie; the route checks it again itself.
        Never for /api/ routes, which have no form of their own: they need Origin or the session's token."""
        if path.startswith("/api/") or not token:
            return False
        return any(hmac.compare_digest(v.encode(), token.encode()) for v in _all_values(header, CSRF_COOKIE) if v)

    async def _read(self, receive: Receive) -> list[Message]:
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                raise _Refused(413, f"request body over {self.max_bytes} bytes")
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, refused: _Refused, send: Send) -> None:
        request = Request(scope)
        response: Response
        templates: Any = getattr(scope.get("app"), "state", None) and getattr(scope["app"].state, "templates", None)
        wants_html = "text/html" in request.headers.get("accept", "") and not scope["path"].startswith("/api/")
        if wants_html and templates is not None:
            context = {
                "status": refused.status,
                "message": refused.message,
                "site_title": self.settings.web.title,
                "nav_active": "",
            }
            response = templates.TemplateResponse(request, "error.html", context, status_code=refused.status)
        elif wants_html:
            response = HTMLResponse(refused.message, status_code=refused.status)
        else:
            response = JSONResponse({"detail": refused.message}, status_code=refused.status)
        await response(scope, self._empty, _Sender(send, self.headers))

    @staticmethod
    async def _empty() -> Message:
        return {"type": "http.disconnect"}
