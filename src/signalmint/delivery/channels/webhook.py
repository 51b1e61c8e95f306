"""Webhooks: a signed JSON POST to a subscriber's HTTPS endpoint (Standard Webhooks).

URL form: ``webhook+https://hooks.example.com/signalmint`` (``webhook+http://`` only when the
operator allows loopback targets, for local testing, or for the demo's own request inspector).
The endpoint's signing secrets (``whsec_`` + base64 of 24 to 64 random bytes, see
:func:`new_secret`) are kept by the store and passed in:
``WebhookChannel.from_url(url, context, secrets=[current, previous])``.

The body is ``message.payload`` as compact UTF-8 JSON. The payload we expect is the
versioned envelope::

    {"type": "signal.created", "version": 1, "timestamp": "2025-01-02T03:04:05Z", "data": {...}}

A payload that already has ``type`` and ``data`` is sent as is; anything else is wrapped in
that envelope (``type`` ``signal.created``, ``version`` 1, ``timestamp`` from
``message.created_at``, ``data`` the payload).

Headers (https://www.standardwebhooks.com): ``webhook-id`` is ``message.idempotency_id``, the
same on every retry; ``webhook-timestamp`` is the attempt's time in integer seconds (fresh on
each attempt, since receivers refuse stale ones); ``webhook-signature`` holds one
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` per secret, space-separated, so
during a rotation both the old and the new secret verify.

Outcomes:

==========================  ==============================================================
2xx                         ``Receipt(provider_id=str(status))``
410 Gone                    :class:`EndpointGone`: permanent, ``disable_endpoint = True``
301, 308                    permanent: the endpoint moved for good; redirects are never
                            followed (a redirect could point anywhere, past the SSRF
                            guard), so the subscriber must register the new URL
other 3xx                   retryable (a temporary redirect may go away)
408, 429, 5xx               retryable, with ``retry_after`` from ``Retry-After`` (seconds
                            or an HTTP date) when the receiver sends one
other 4xx                   permanent
timeout, connection error   retryable (default timeout: 15 s for the whole exchange)
refused by the SSRF guard   :class:`~signalmint.net.ssrf.UnsafeTarget` (permanent)
==========================  ==============================================================

The HTTP client is :class:`~signalmint.delivery.http1.Http1Pool`, a small keep-alive
HTTP/1.1 client (``bench/http_clients.py`` measures it against aiohttp and httpx for this
fan-out). The worker creates one pool with :func:`make_http_session` and puts it in
``ChannelContext.http``; that pool dials only addresses the SSRF guard vetted (see
:mod:`signalmint.net.ssrf`), follows no redirects, ignores proxy environment variables
and keeps no cookies.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets as _secrets
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Final

import yarl

from signalmint.delivery import http1
from signalmint.delivery.channels.base import ChannelContext, Message, Receipt
from signalmint.errors import ConfigError, DeliveryError
from signalmint.net.ssrf import ParsedTarget, Resolver, check_url, own_origin

__all__ = [
    "DEFAULT_TIMEOUT",
    "EndpointGone",
    "WebhookChannel",
    "encode_body",
    "make_http_session",
    "new_secret",
    "parse_retry_after",
    "sign",
]

DEFAULT_TIMEOUT: Final = 15.0
USER_AGENT: Final = "signalmint-webhooks/1"
SECRET_PREFIX: Final = "whsec_"
PREFIX: Final = "webhook+"


class EndpointGone(DeliveryError):
    """The receiver answered 410 Gone: stop sending to this endpoint (``disable_endpoint``)."""

    disable_endpoint: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def new_secret(nbytes: int = 32) -> str:
    """A fresh endpoint signing secret: ``whsec_`` + base64 of ``nbytes`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode()


def _secret_key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:  # strict: the base64 alphabet only, padding only at the end
        key = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise DeliveryError("webhook secret is not whsec_ followed by base64", permanent=True) from None
    if not 24 <= len(key) <= 64:
        raise DeliveryError(f"webhook secret must hold 24 to 64 bytes, not {len(key)}", permanent=True)
    return key


def sign(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per key, space-separated.

    >>> sign("msg_1", 1700000000, b'{"a":1}', [b"k" * 24])
    'v1,bYr7Rz93bX8WqNI5XVthzq7NE/LcYrDkos9dgSLYHOc='
    """
    return _signature(b"%s.%d.%s" % (msg_id.encode(), timestamp, body), keys).decode("ascii")


def _signature(signed: bytes, keys: Sequence[bytes | HmacKey]) -> bytes:
    return b" ".join(
        b"v1," + binascii.b2a_base64(
            key.digest(signed) if isinstance(key, HmacKey) else hmac.digest(key, signed, "sha256"), newline=False
        )
        for key in keys
    )  # fmt: skip


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))


class HmacKey:
    """HMAC-SHA256 (RFC 2104) under one key, its inner and outer hash states computed once:
    a signature then costs two hash copies, not a new HMAC context (with OpenSSL 3, setting
    one up per message took twice as long as the hashing).

    >>> key = b"k" * 24
    >>> HmacKey(key).digest(b"msg") == hmac.digest(key, b"msg", "sha256")
    True
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # the block size: a longer key is hashed first
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


@functools.lru_cache(maxsize=10_000)
def _hmac_key(secret: str) -> HmacKey:
    """The signing key of ``secret``, made once per secret (a worker builds the channel of every
    endpoint it sends to; HmacKey is immutable: each signature copies its hash states)."""
    return HmacKey(_secret_key(secret))


@functools.lru_cache(maxsize=10_000)
def _hmac_keys(secrets: tuple[str, ...]) -> tuple[HmacKey, ...]:
    """The signing keys of an endpoint's secrets, one tuple per distinct list (as :func:`_hmac_key`)."""
    return tuple(_hmac_key(s) for s in secrets)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date).

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    30.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def make_http_session(
    context: ChannelContext,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    limit: int = 512,
    limit_per_host: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
) -> http1.Http1Pool:
    """The worker's HTTP pool for webhooks; close it on exit (``await pool.close()``).

    It enforces ``context.allow_loopback`` and resolves with ``resolver`` (default
    ``context.resolver``, else the system's) through the SSRF guard, so every address it
    connects to was vetted. ``limit`` caps connections (``limit_per_host=0``: no separate
    cap per host); ``ssl_context`` replaces the default verified context (tests pass one
    trusting a local CA).
    """
    return http1.Http1Pool(
        resolver=resolver or context.resolver,
        allow_loopback=context.allow_loopback,
        own_origin=own_origin(context.own) if context.own else None,
        ssl_context=ssl_context,
        limit=limit,
        limit_per_origin=limit_per_host,
        timeout=timeout,
    )


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_body(message: Message) -> bytes:
    """The request body: the envelope described in the module docstring, as compact JSON."""
    if message.body is not None:  # encoded once by the worker for every endpoint of the same view
        return message.body
    payload: Mapping[str, Any] = message.payload
    if "type" not in payload or "data" not in payload:
        payload = {
            "type": "signal.created",
            "version": 1,
            "timestamp": _json_default(message.created_at),
            "data": dict(payload),
        }
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise DeliveryError(f"webhook payload is not JSON: {exc}", permanent=True) from None
    return text.encode()


#: The fixed headers of every webhook request.
_HEADERS: Final = {"content-type": "application/json", "user-agent": USER_AGENT}
_TOKENISH = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,256}")
#: A 2xx status as a receipt's provider id (``str(status)``, made once).
_STATUS_TEXT: Final = {status: str(status) for status in range(200, 300)}


class WebhookChannel:
    """POST signed JSON to one endpoint. Build it with :meth:`from_url`."""

    # a worker keeps one per endpoint: no __dict__ each (fewer objects for the collector to walk)
    __slots__ = ("_head", "_keys", "_vetted", "context", "secrets", "target", "timeout")

    scheme: ClassVar[str] = "webhook"
    kind: ClassVar[str] = "webhook"
    url_prefix: ClassVar[str] = "webhook+"
    title: ClassVar[str] = "Webhook"
    subscriber_added: ClassVar[bool] = True
    for_people: ClassVar[bool] = False
    renders_chart: ClassVar[bool] = False
    requires: ClassVar[str | None] = None
    position: ClassVar[int] = 30  # where pages list it (plugins: 100 unless they say)
    takes_secrets: ClassVar[bool] = True

    @classmethod
    def example_url(cls, sink: Any) -> str:
        """A URL reaching the local sinks of :func:`signalmint.testing.check_channel`."""
        return f"webhook+{sink.http_url}/hook?token={sink.secret}"

    def __init__(
        self,
        target: ParsedTarget,
        context: ChannelContext,
        *,
        secrets: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.target = target
        self.context = context
        self.secrets = tuple(secrets)
        self.timeout = timeout
        self._keys = _hmac_keys(self.secrets)
        self._head = http1.request_head(target, _HEADERS)
        self._vetted: tuple[tuple[bool, str | None], ParsedTarget] | None = None  # (policy, check_url's answer)

    @classmethod
    def from_url(
        cls,
        url: str,
        context: ChannelContext,
        *,
        secrets: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> WebhookChannel:
        """Vet ``webhook+https://...`` (the registration-time SSRF check) and bind its secrets."""
        if not url.startswith(PREFIX):
            raise DeliveryError(f"a webhook URL starts with {PREFIX}https://", permanent=True)
        session = context.http
        if session is not None and not isinstance(session, http1.Http1Pool):
            raise ConfigError(
                "the worker's HTTP session was not made by make_http_session(), so it has no SSRF guard",
                key="ChannelContext.http",
                hint="ctx.http = signalmint.delivery.channels.webhook.make_http_session(ctx)",
            )
        if session is not None and session.allow_loopback != context.allow_loopback:
            raise ConfigError(
                "the HTTP session and the channel context disagree on allow_loopback", key="ChannelContext.http"
            )
        policy = (context.allow_loopback, context.own)
        target = check_url(url.removeprefix(PREFIX), allow_loopback=policy[0], own=policy[1])
        channel = cls(target, context, secrets=secrets, timeout=timeout)
        channel._vetted = (policy, target)  # the first send need not vet it again under the same policy
        return channel

    def to_url(self, redact: bool = True) -> str:
        """The URL back; ``redact`` masks query values and token-like path segments."""
        if not redact:
            return PREFIX + self.target.url
        url = yarl.URL(self.target.url)
        path = "/".join("***" if _TOKENISH.fullmatch(seg) else seg for seg in url.raw_path.split("/"))
        keys = [pair.split("=", 1)[0] for pair in url.raw_query_string.split("&") if pair]
        query = "&".join(f"{key}=***" for key in keys)
        base = url.with_query(None).with_fragment(None).with_path(path, encoded=True)
        return f"{PREFIX}{base}" + (f"?{query}" if query else "")

    def __repr__(self) -> str:
        return f"WebhookChannel({self.to_url()!r}, secrets={len(self.secrets)})"

    async def send(self, message: Message) -> Receipt:
        """POST the message; a Receipt on 2xx, else DeliveryError (see the module docstring)."""
        # Vet again at send time: the policy may have changed since registration. check_url is
        # a pure function of the URL and the policy, so its answer is kept per policy.
        policy = (self.context.allow_loopback, self.context.own)
        if self._vetted is None or self._vetted[0] != policy:
            self._vetted = (policy, check_url(self.target.url, allow_loopback=policy[0], own=policy[1]))
        target = self._vetted[1]
        if not self._keys:
            raise DeliveryError("the webhook endpoint has no signing secret", permanent=True)
        if not _HEADER_SAFE.fullmatch(message.idempotency_id):
            raise DeliveryError("the idempotency id cannot be sent as webhook-id", permanent=True)
        body = encode_body(message)
        timestamp = int(time.time())
        msg_id = message.idempotency_id.encode("ascii")
        signature = _signature(b"%s.%d.%s" % (msg_id, timestamp, body), self._keys)
        # Nothing to escape: the id passed _HEADER_SAFE, the timestamp is digits, the signature base64.
        fields = b"webhook-id: %s\r\nwebhook-timestamp: %d\r\nwebhook-signature: %s\r\n" % (
            msg_id, timestamp, signature,
        )  # fmt: skip
        request = http1.finish_request(self._head, fields, body)
        session, own = self.context.http, None
        if session is None:  # one-off sends (a "send test event" button): a pool of our own, closed after
            session = own = make_http_session(self.context, timeout=self.timeout)
        # the request inline, not in a coroutine of its own: one coroutine less per delivery
        try:
            response = await session.request(target, request, timeout=self.timeout)
        except http1.HttpError as exc:
            raise self._unanswered(target, exc) from None
        finally:
            if own is not None:
                await own.close()
        status = response.status
        if 200 <= status < 300:
            return Receipt(self.scheme, datetime.now(UTC), _STATUS_TEXT[status], "")
        return self._answered(target, response)

    def _unanswered(self, target: ParsedTarget, exc: http1.HttpError) -> DeliveryError:
        where = f"webhook {target.host}"
        if isinstance(exc, http1.Timeout):
            return DeliveryError(f"{where}: no answer within {self.timeout:g} s", permanent=False)
        return DeliveryError(f"{where}: {type(exc).__name__}: {exc}", permanent=False)

    def _answered(self, target: ParsedTarget, response: http1.Response) -> Receipt:
        snippet = response.body[:300].decode("utf-8", "replace")
        return self._failure(f"webhook {target.host}", response.status, response.headers, snippet)

    def _failure(self, where: str, status: int, headers: Mapping[str, str], snippet: str) -> Receipt:
        text = " ".join(snippet.split())[:200]
        said = f"{where} answered {status}" + (f": {text}" if text else "")
        if status == 410:
            raise EndpointGone(f"{said} (endpoint gone: disable it)")
        if 300 <= status < 400:
            try:
                location = str(yarl.URL(headers.get("location", "")).with_query(None).with_fragment(None))
            except ValueError:
                location = ""
            moved = f"{said}, redirecting to {location or '?'} (redirects are not followed)"
            raise DeliveryError(moved, permanent=status in (301, 308))
        if status in (408, 429) or status >= 500:
            raise DeliveryError(said, permanent=False, retry_after=parse_retry_after(headers.get("retry-after")))
        raise DeliveryError(said, permanent=400 <= status < 500)
