"""The Apprise channel against a real local HTTP sink (Apprise's generic json:// poster)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from signalmint.delivery.channels.apprise import AppriseChannel, vet_apprise_url
from signalmint.delivery.channels.base import Channel, ChannelContext, Message, Receipt
from signalmint.errors import DeliveryError
from signalmint.net.ssrf import UnsafeTarget

from .conftest import HttpSink, Reply

LOOPBACK = ChannelContext(allow_loopback=True)


def message(chart: bytes | None = None) -> Message:
    return Message(
        idempotency_id="msg_ap_1",
        subject="AAPL volume spike",
        text="AAPL traded 7.5x its usual volume",
        payload={},
        created_at=datetime(2025, 3, 4, tzinfo=UTC),
        chart_png=chart,
    )


def send(url: str, msg: Message, context: ChannelContext = LOOPBACK) -> Receipt:
    return asyncio.run(AppriseChannel.from_url(url, context).send(msg))


def test_is_a_channel() -> None:
    channel = AppriseChannel.from_url("apprise+ntfy://signalmint-demo", ChannelContext())
    assert isinstance(channel, Channel)
    assert AppriseChannel.scheme == "apprise"


def test_delivers_json(http_sink: HttpSink) -> None:
    receipt = send("apprise+" + http_sink.url("/notify").replace("http://", "json://"), message())
    assert receipt.channel == "apprise" and "JSON" in receipt.detail
    (req,) = http_sink.requests
    assert (req.method, req.path) == ("POST", "/notify")
    body = req.json()
    assert body["title"] == "AAPL volume spike"
    assert body["message"] == "AAPL traded 7.5x its usual volume"


def test_chart_goes_along_as_an_attachment(http_sink: HttpSink) -> None:
    png = b"\x89PNG\r\n\x1a\nnot-really-a-chart"
    send("apprise+" + http_sink.url("/notify").replace("http://", "json://"), message(chart=png))
    (attachment,) = http_sink.requests[0].json()["attachments"]
    assert attachment["filename"] == "chart.png"
    assert attachment["mimetype"] == "image/png"
    assert base64.b64decode(attachment["base64"]) == png


def test_failure_raises_with_what_apprise_logged(http_sink: HttpSink) -> None:
    http_sink.script(Reply(500, body=b"boom"))
    with pytest.raises(DeliveryError) as info:
        send("apprise+" + http_sink.url("/notify").replace("http://", "json://"), message())
    assert info.value.permanent is False
    assert "500" in str(info.value) and "apprise JSON failed" in str(info.value)
    assert len(http_sink.requests) == 1  # Apprise's own retries are off; the outbox retries


def test_concurrent_failures_report_their_own_logs(http_sink: HttpSink) -> None:
    http_sink.default = Reply(200)
    url = "apprise+" + http_sink.url("/notify").replace("http://", "json://")
    statuses = [503, 200, 502, 200, 500]

    async def run() -> list[Receipt | BaseException]:
        channels = [AppriseChannel.from_url(url, LOOPBACK) for _ in statuses]
        http_sink.script(*(Reply(s) for s in statuses))
        # sequential script order is not guaranteed under concurrency: compare by what each got
        return await asyncio.gather(*(c.send(message()) for c in channels), return_exceptions=True)

    outcomes = asyncio.run(run())
    errors = [o for o in outcomes if isinstance(o, DeliveryError)]
    assert len(errors) == 3 and sum(isinstance(o, Receipt) for o in outcomes) == 2
    codes = sorted(next(c for c in ("500", "502", "503") if c in str(e)) for e in errors)
    assert codes == ["500", "502", "503"]
    for e in errors:
        assert sum(c in str(e) for c in ("error=500", "error=502", "error=503")) == 1


@pytest.mark.parametrize(
    "url",
    [
        "apprise+nosuchservice://x",
        "apprise+json://",
        "apprise+discord://only-an-id",
        "apprise+not a url",
        "apprise+",
        "apprise+json://0x7f.1/",  # Apprise cannot parse it either (so never dials it)
        "ntfy://topic",  # missing our prefix
    ],
)
def test_invalid_url_is_permanent_at_from_url(url: str) -> None:
    with pytest.raises(DeliveryError) as info:
        AppriseChannel.from_url(url, ChannelContext())
    assert info.value.permanent
    assert not isinstance(info.value, UnsafeTarget)


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:8080/hook",
        "jsons://localhost/hook",
        "xml://10.0.0.5/x",
        "form://169.254.169.254/latest/meta-data",
        "json://2130706433/",
        "json://[::1]:8080/",
        "json://[fe80::1]/",
        "json://[::ffff:127.0.0.1]/",
        "gotify://metadata.google.internal/token123",
        "ntfy://192.168.1.5/alerts",
        "mmost://100.64.0.9/abcdefghijklmnopqrstuvwxyz",
        "apprise+json://127.0.0.1/",
        "json://hooks.example.com:25/",  # an HTTP poster aimed at a mail port
        "forms://hooks.example.com:22/",
    ],
)
def test_user_hosts_are_vetted(url: str) -> None:
    with pytest.raises(UnsafeTarget) as info:
        vet_apprise_url(url)
    assert info.value.permanent
    with pytest.raises(UnsafeTarget):
        AppriseChannel.from_url("apprise+" + url.removeprefix("apprise+"), ChannelContext())


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ntfy://signalmint-demo", None),  # ntfy.sh cloud: the host is the topic
        ("ntfys://ntfy.example.com/alerts", "ntfy.example.com"),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", None),  # fixed host; the id only looks like an IP
        ("json://hooks.example.com/in", "hooks.example.com"),
        ("apprise+jsons://hooks.example.com:8443/in", "hooks.example.com"),
    ],
)
def test_public_and_fixed_hosts_pass(url: str, host: str | None) -> None:
    assert vet_apprise_url(url) == ([host] if host else [])


def test_loopback_only_with_allow_loopback() -> None:
    assert vet_apprise_url("json://127.0.0.1:8080/x", allow_loopback=True) == ["127.0.0.1"]
    with pytest.raises(UnsafeTarget):
        vet_apprise_url("json://10.0.0.1:8080/x", allow_loopback=True)


def test_send_time_resolution_is_vetted(http_sink: HttpSink) -> None:
    """Registration vets the name without DNS; each send resolves and vets it before Apprise runs."""
    asked: list[str] = []

    async def private(host: str) -> Sequence[str]:
        asked.append(host)
        return ["127.0.0.1"]

    context = ChannelContext(allow_loopback=False, resolver=private)
    channel = AppriseChannel.from_url(f"apprise+json://sink.example.com:{http_sink.port}/x", context)
    assert asked == []
    with pytest.raises(UnsafeTarget, match=re.escape("sink.example.com resolves to 127.0.0.1")):
        asyncio.run(channel.send(message()))
    assert asked == ["sink.example.com"]
    assert http_sink.requests == []


def test_url_round_trip_and_privacy_mode() -> None:
    url = "apprise+json://alice:s3cretpw@hooks.example.com/in"
    channel = AppriseChannel.from_url(url, ChannelContext())
    assert channel.to_url(redact=False) == url
    assert AppriseChannel.from_url(channel.to_url(redact=False), ChannelContext()).to_url(redact=False) == url
    redacted = channel.to_url()
    assert redacted.startswith("apprise+json://") and "hooks.example.com" in redacted
    assert "s3cretpw" not in redacted and "s3cretpw" not in repr(channel)
