"""The webhook channel against a real local HTTP sink; signatures checked with the reference library."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import standardwebhooks

from signalmint.delivery.channels.base import Channel, ChannelContext, Message, Receipt
from signalmint.delivery.channels.webhook import (
    EndpointGone,
    HmacKey,
    WebhookChannel,
    make_http_session,
    new_secret,
)
from signalmint.errors import DeliveryError
from signalmint.net.ssrf import UnsafeTarget

from .conftest import HttpSink, Reply

ENVELOPE = {
    "type": "signal.created",
    "version": 1,
    "timestamp": "2025-03-04T05:06:07Z",
    "data": {"automation": "volume", "key": "AAPL", "score": 7.5, "note": "café ☕"},
}


def message(idempotency_id: str = "msg_2a1b", payload: dict[str, Any] | None = None) -> Message:
    return Message(
        idempotency_id=idempotency_id,
        subject="AAPL volume spike",
        text="AAPL traded 7.5x its usual volume",
        payload=ENVELOPE if payload is None else payload,
        created_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )


def deliver(
    sink: HttpSink,
    *messages: Message,
    secrets: Sequence[str] | None = None,
    path: str = "/hook",
    timeout: float = 5.0,
) -> list[Receipt | DeliveryError]:
    """Send each message through one worker-style session; collect receipts and errors."""
    secrets = [new_secret()] if secrets is None else secrets

    async def run() -> list[Receipt | DeliveryError]:
        context = ChannelContext(allow_loopback=True)
        async with make_http_session(context) as session:
            context.http = session
            channel = WebhookChannel.from_url("webhook+" + sink.url(path), context, secrets=secrets, timeout=timeout)
            outcomes: list[Receipt | DeliveryError] = []
            for m in messages:
                try:
                    outcomes.append(await channel.send(m))
                except DeliveryError as exc:
                    outcomes.append(exc)
            return outcomes

    return asyncio.run(run())


def failure(sink: HttpSink, reply: Reply, **kw: Any) -> DeliveryError:
    sink.script(reply)
    (outcome,) = deliver(sink, message(), **kw)
    assert isinstance(outcome, DeliveryError), outcome
    return outcome


def test_is_a_channel() -> None:
    channel = WebhookChannel.from_url("webhook+https://hooks.example.com/in", ChannelContext())
    assert isinstance(channel, Channel)
    assert WebhookChannel.scheme == "webhook"


def test_delivers_compact_json_with_standard_webhooks_headers(http_sink: HttpSink) -> None:
    secret = new_secret()
    (receipt,) = deliver(http_sink, message(), secrets=[secret])
    assert isinstance(receipt, Receipt)
    assert (receipt.channel, receipt.provider_id) == ("webhook", "200")
    (req,) = http_sink.requests
    assert (req.method, req.path) == ("POST", "/hook")
    assert req.body == json.dumps(ENVELOPE, separators=(",", ":"), ensure_ascii=False).encode()
    assert req.json() == ENVELOPE
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == "signalmint-webhooks/1"
    assert req.headers["webhook-id"] == "msg_2a1b"
    assert abs(int(req.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 10
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", req.headers["webhook-signature"])
    assert "cookie" not in req.headers
    assert standardwebhooks.Webhook(secret).verify(req.body, req.headers) == ENVELOPE


def test_signatures_verify_for_each_secret_during_rotation(http_sink: HttpSink) -> None:
    old, new = new_secret(), new_secret()
    deliver(http_sink, message(), secrets=[new, old])
    (req,) = http_sink.requests
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(req.body, req.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(req.body, req.headers)
    tampered = req.body.replace(b"AAPL", b"MSFT")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new).verify(tampered, req.headers)


def test_same_webhook_id_on_every_attempt(http_sink: HttpSink) -> None:
    http_sink.script(Reply(503), Reply(500))
    outcomes = deliver(http_sink, message("msg_same"), message("msg_same"), message("msg_same"))
    assert [type(o).__name__ for o in outcomes] == ["DeliveryError", "DeliveryError", "Receipt"]
    assert {r.headers["webhook-id"] for r in http_sink.requests} == {"msg_same"}


def test_plain_payload_is_wrapped_in_the_envelope(http_sink: HttpSink) -> None:
    deliver(http_sink, message(payload={"key": "AAPL", "at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)}))
    assert http_sink.requests[0].json() == {
        "type": "signal.created",
        "version": 1,
        "timestamp": "2025-03-04T05:06:07Z",
        "data": {"key": "AAPL", "at": "2025-01-02T03:04:05Z"},
    }


def test_unserializable_payload_is_permanent(http_sink: HttpSink) -> None:
    (outcome,) = deliver(http_sink, message(payload={"type": "x", "data": {1, 2}}))
    assert isinstance(outcome, DeliveryError) and outcome.permanent
    assert http_sink.requests == []


def test_410_disables_the_endpoint(http_sink: HttpSink) -> None:
    exc = failure(http_sink, Reply(410, body=b"no such hook"))
    assert isinstance(exc, EndpointGone)
    assert exc.permanent and exc.disable_endpoint
    assert "410" in str(exc) and "no such hook" in str(exc)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_retry_with_retry_after_seconds(http_sink: HttpSink, status: int) -> None:
    exc = failure(http_sink, Reply(status, {"retry-after": "7"}))
    assert not exc.permanent
    assert exc.retry_after == 7
    assert getattr(exc, "disable_endpoint", False) is False


def test_retry_after_as_http_date(http_sink: HttpSink) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    exc = failure(http_sink, Reply(503, {"retry-after": format_datetime(when, usegmt=True)}))
    assert exc.retry_after is not None and 80 <= exc.retry_after <= 91


def test_retry_without_hint(http_sink: HttpSink) -> None:
    exc = failure(http_sink, Reply(500, {"retry-after": "whenever"}))
    assert not exc.permanent and exc.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422])
def test_other_4xx_are_permanent(http_sink: HttpSink, status: int) -> None:
    exc = failure(http_sink, Reply(status, body=b"bad   payload\n"))
    assert exc.permanent and not isinstance(exc, EndpointGone)
    assert f"answered {status}: bad payload" in str(exc)


def test_408_is_retryable(http_sink: HttpSink) -> None:
    assert not failure(http_sink, Reply(408)).permanent


@pytest.mark.parametrize(("status", "permanent"), [(301, True), (308, True), (302, False), (303, False), (307, False)])
def test_redirects_are_not_followed(http_sink: HttpSink, status: int, permanent: bool) -> None:
    exc = failure(http_sink, Reply(status, {"location": http_sink.url("/elsewhere?token=s3cret")}))
    assert exc.permanent is permanent
    assert "/elsewhere" in str(exc) and "s3cret" not in str(exc)
    assert [r.path for r in http_sink.requests] == ["/hook"]


def test_garbled_location_is_still_a_clean_error(http_sink: HttpSink) -> None:
    exc = failure(http_sink, Reply(302, {"location": "http://[::1"}))
    assert not exc.permanent and "302" in str(exc)


def test_timeout_is_retryable(http_sink: HttpSink) -> None:
    exc = failure(http_sink, Reply(200, delay=1.0), timeout=0.2)
    assert not exc.permanent
    assert "0.2 s" in str(exc)


def test_connection_refused_is_retryable(http_sink: HttpSink) -> None:
    from .conftest import _free_port

    dead = HttpSink()
    dead.port = _free_port()  # nothing listens there
    (outcome,) = deliver(dead, message())
    assert isinstance(outcome, DeliveryError) and not outcome.permanent


def test_sends_without_a_worker_session(http_sink: HttpSink) -> None:
    """A one-off send (the "send test event" button) makes and closes its own guarded session."""
    secret = new_secret()
    channel = WebhookChannel.from_url(
        "webhook+" + http_sink.url("/test-event"), ChannelContext(allow_loopback=True), secrets=[secret]
    )
    receipt = asyncio.run(channel.send(message()))
    assert receipt.provider_id == "200"
    standardwebhooks.Webhook(secret).verify(http_sink.requests[0].body, http_sink.requests[0].headers)


def test_without_secret_nothing_is_sent(http_sink: HttpSink) -> None:
    (outcome,) = deliver(http_sink, message(), secrets=[])
    assert isinstance(outcome, DeliveryError) and outcome.permanent
    assert http_sink.requests == []


@pytest.mark.parametrize(
    "secret",
    ["whsec_not base64!", "whsec_" + "QUJD", "whsec_" + "A" * 200, ""],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(DeliveryError) as info:
        WebhookChannel.from_url("webhook+https://hooks.example.com/", ChannelContext(), secrets=[secret])
    assert info.value.permanent


@pytest.mark.parametrize("size", [1, 24, 32, 63, 64, 65, 200])
def test_precomputed_hmac_keys_sign_like_hmac(size: int) -> None:
    key = bytes(range(size))
    for body in (b"", b"msg_1.1700000000.{}", ("café ☕" * 500).encode()):
        assert HmacKey(key).digest(body) == hmac.digest(key, body, "sha256")


def test_new_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    standardwebhooks.Webhook(secret)  # the reference library accepts it
    WebhookChannel.from_url("webhook+https://hooks.example.com/", ChannelContext(), secrets=[secret])


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/",
        "webhooks+https://hooks.example.com/",
        "webhook+http://hooks.example.com/",
        "webhook+https://127.0.0.1/",
        "webhook+https://10.1.2.3/hook",
    ],
)
def test_from_url_refuses(url: str) -> None:
    with pytest.raises(DeliveryError) as info:
        WebhookChannel.from_url(url, ChannelContext())
    assert info.value.permanent


def test_http_only_with_allow_loopback() -> None:
    with pytest.raises(UnsafeTarget):
        WebhookChannel.from_url("webhook+http://127.0.0.1:8080/", ChannelContext())
    WebhookChannel.from_url("webhook+http://127.0.0.1:8080/", ChannelContext(allow_loopback=True))


def test_url_round_trip_and_redaction() -> None:
    url = "webhook+https://hooks.example.com:8443/in/T0123ABCDEF456GHIJ789KLMNO?token=s3cret&team=alpha"
    channel = WebhookChannel.from_url(url, ChannelContext(), secrets=[new_secret()])
    assert channel.to_url(redact=False) == url
    assert WebhookChannel.from_url(channel.to_url(redact=False), ChannelContext()).to_url(redact=False) == url
    redacted = channel.to_url()
    assert redacted == "webhook+https://hooks.example.com:8443/in/***?token=***&team=***"
    assert "s3cret" not in repr(channel) and "whsec_" not in repr(channel)
