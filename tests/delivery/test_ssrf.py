"""The SSRF guard: every spelling of a non-public target is refused, at registration and at send time.

Names are answered by stub resolvers (no real DNS). The rebinding tests use real local sinks:
a request that reached 127.0.0.1 would be recorded there.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import pytest

from signalmint.delivery.channels.base import ChannelContext, Message
from signalmint.delivery.channels.webhook import WebhookChannel, make_http_session, new_secret
from signalmint.errors import ConfigError, DeliveryError
from signalmint.net.ssrf import Resolver, UnsafeTarget, check_host, check_url, resolve_safe
from signalmint.net.vetted import VettedResolver

from .conftest import TLS_HOSTNAME, HttpSink, HttpsSink

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"

REFUSED_URLS = [
    # loopback in every spelling
    "https://127.0.0.1/",
    "https://127.0.0.2/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0x7f.0.0.1/",
    "https://0x7F.0x00.0x00.0x01/",
    "https://0177.0.0.1/",
    "https://0177.0000.0000.0001/",
    "https://127.1/",
    "https://127.0.1/",
    "https://017700000001/",
    "https://127.0.0.1./",
    "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # fullwidth digits, IDNA-mapped to 127.0.0.1
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:0:127.0.0.1]/",
    "https://[::127.0.0.1]/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://localhost.localdomain/",
    # private
    "https://10.0.0.1/",
    "https://10.255.255.255/",
    "https://172.16.0.1/",
    "https://172.31.255.254/",
    "https://192.168.1.1/",
    "https://3232235777/",  # 192.168.1.1
    "https://0xc0a80101/",
    "https://0300.0250.1.1/",
    "https://[fc00::1]/",
    "https://[fd12:3456::1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://[::ffff:a00:1]/",
    # link-local and cloud metadata
    "https://169.254.169.254/latest/meta-data/",
    "https://169.254.1.1/",
    "https://2852039166/",  # 169.254.169.254
    "https://0xa9fea9fe/",
    "https://0251.0376.0251.0376/",
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fd00:ec2::254]/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://metadata/",
    "https://168.63.129.16/",
    # CGNAT, unspecified, multicast, reserved, broadcast, documentation, benchmarking
    "https://100.64.0.1/",
    "https://100.100.100.200/",
    "https://0.0.0.0/",
    "https://0/",
    "https://0x0/",
    "https://[::]/",
    "https://224.0.0.1/",
    "https://239.255.255.250/",
    "https://[ff02::1]/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://192.0.2.1/",
    "https://198.18.0.1/",
    "https://[2001:db8::1]/",
    # IPv6 transition forms embedding private IPv4
    "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "https://[2002:c0a8:101::1]/",  # 6to4 of 192.168.1.1
    "https://[64:ff9b::127.0.0.1]/",  # NAT64 of loopback
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "https://[64:ff9b:1::1]/",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    # names that never are public
    "https://printer.local/",
    "https://router.home.arpa/",
    "https://1.0.0.127.in-addr.arpa/",
    "https://intranet/",
    # malformed numeric hosts
    "https://1.2.3.4.5/",
    "https://256.0.0.1/",
    "https://0x100000000/",
    "https://08.0.0.1/",  # not octal, not decimal either
    "https://example.123/",
    # not https, credentials, ports, no host, bad names
    "http://hooks.example.com/",
    "ftp://hooks.example.com/",
    "file:///etc/passwd",
    "https://user:pass@hooks.example.com/",
    "https://user@hooks.example.com/",
    "https://hooks.example.com:0/",
    "https://hooks.example.com:22/",
    "https://hooks.example.com:25/",
    "https://hooks.example.com:99999/",
    "https:///path",
    "https://exa mple.com/",
    "https://ex%41mple.com/",
    "not a url",
    "https://[::1/",
]

ACCEPTED_URLS = [
    ("https://hooks.example.com/in", "hooks.example.com", 443),
    ("https://Hooks.Example.COM./in?token=abc", "hooks.example.com", 443),
    ("https://hooks.example.com:8443/in", "hooks.example.com", 8443),
    ("https://bücher.de/hook", "xn--bcher-kva.de", 443),
    (f"https://{PUBLIC_V4}/hook", PUBLIC_V4, 443),
    ("https://8.8.8.8/", "8.8.8.8", 443),
    (f"https://[{PUBLIC_V6}]/hook", PUBLIC_V6, 443),
    ("https://[::ffff:8.8.8.8]/", "::ffff:808:808", 443),
    ("https://[2002:808:808::1]/", "2002:808:808::1", 443),  # 6to4 of a public address
    ("https://[64:ff9b::8.8.8.8]/", "64:ff9b::808:808", 443),  # NAT64 of a public address
    ("https://my_service.example.org/x", "my_service.example.org", 443),
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refused_at_registration(url: str) -> None:
    with pytest.raises(UnsafeTarget) as info:
        check_url(url)
    assert info.value.permanent is True
    assert isinstance(info.value, DeliveryError)
    assert info.value.reason


@pytest.mark.parametrize(("url", "host", "port"), ACCEPTED_URLS)
def test_public_targets_accepted(url: str, host: str, port: int) -> None:
    target = check_url(url)
    assert (target.host, target.port, target.scheme) == (host, port, "https")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://0x7f.0.0.1/", "non-canonical spelling of 127.0.0.1, a loopback"),
        ("https://2852039166/", "169.254.169.254, a cloud metadata address"),
        ("https://[::ffff:7f00:1]/", "IPv4-mapped 127.0.0.1, a loopback"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://metadata.google.internal/", "internal name"),
        ("https://134744072/", "non-canonical spelling of 8.8.8.8: write 8.8.8.8"),
        ("https://[2002:c0a8:101::1]/", "6to4 embedding 192.168.1.1, a private address"),
        ("http://hooks.example.com/", "only https"),
    ],
)
def test_reasons_are_clear(url: str, words: str) -> None:
    with pytest.raises(UnsafeTarget, match=words):
        check_url(url)


def test_public_ip_in_an_odd_spelling_is_refused_too() -> None:
    """Parsers disagree on non-canonical numbers, so they are refused even when public."""
    with pytest.raises(UnsafeTarget):
        check_url("https://0x08080808/")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://127.0.0.1/",
        "http://localhost:3000/",
        "https://[::1]:8443/",
        "http://a.localhost/",
    ],
)
def test_loopback_only_with_allow_loopback(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url)
    assert check_url(url, allow_loopback=True).port > 0


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://169.254.169.254/", "https://[fe80::1]/", "http://0/"])
def test_allow_loopback_allows_nothing_else(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url, allow_loopback=True)


def test_non_canonical_loopback_refused_even_when_loopback_allowed() -> None:
    with pytest.raises(UnsafeTarget, match=re.escape("write 127.0.0.1")):
        check_url("http://127.1:8080/", allow_loopback=True)


def test_check_host_normalizes() -> None:
    assert check_host("Hooks.Example.COM.") == "hooks.example.com"
    assert check_host(PUBLIC_V6.upper()) == PUBLIC_V6


# -- resolution --------------------------------------------------------------------------


def stub(answers: dict[str, list[str]]) -> tuple[list[str], Resolver]:
    """A stub resolver over a fixed table, and the list of names it was asked."""
    asked: list[str] = []

    async def resolve(host: str) -> Sequence[str]:
        asked.append(host)
        return answers.get(host, [])

    return asked, resolve


def test_resolve_public_name() -> None:
    asked, resolver = stub({"hooks.example.com": [PUBLIC_V4, PUBLIC_V6, PUBLIC_V4]})
    ips = asyncio.run(resolve_safe("hooks.example.com", 443, resolver=resolver))
    assert ips == [PUBLIC_V4, PUBLIC_V6]
    assert asked == ["hooks.example.com"]


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        [PUBLIC_V4, "10.0.0.7"],  # public first, private second
        [PUBLIC_V4, "169.254.169.254"],
        [PUBLIC_V6, "::ffff:192.168.0.1"],
        [PUBLIC_V4, "fe80::1%eth0"],
        ["100.64.3.3", PUBLIC_V4],
        ["not-an-ip"],
    ],
)
def test_name_refused_if_any_answer_is_unsafe(answers: list[str]) -> None:
    _, resolver = stub({"rebind.example.com": answers})
    with pytest.raises(UnsafeTarget) as info:
        asyncio.run(resolve_safe("rebind.example.com", 443, resolver=resolver))
    assert info.value.permanent


def test_name_without_answers_is_retryable() -> None:
    _, resolver = stub({})
    with pytest.raises(DeliveryError) as info:
        asyncio.run(resolve_safe("gone.example.com", 443, resolver=resolver))
    assert not isinstance(info.value, UnsafeTarget)
    assert info.value.permanent is False


def test_names_refused_before_asking_the_resolver() -> None:
    asked, resolver = stub({"localhost": ["127.0.0.1"]})
    for host in ("localhost", "metadata.google.internal", "0x7f.1", "2130706433"):
        with pytest.raises(UnsafeTarget):
            asyncio.run(resolve_safe(host, 443, resolver=resolver))
    assert asked == []


def test_ip_literal_is_vetted_without_resolving() -> None:
    asked, resolver = stub({})
    assert asyncio.run(resolve_safe("8.8.8.8", 443, resolver=resolver)) == ["8.8.8.8"]
    assert asked == []


def test_vetted_resolver_filters_by_family() -> None:
    _, resolver = stub({"dual.example.com": [PUBLIC_V4, PUBLIC_V6]})
    vetted = VettedResolver(resolver=resolver)
    v6 = asyncio.run(vetted.resolve("dual.example.com", 443, socket.AF_INET6))
    both = asyncio.run(vetted.resolve("dual.example.com", 443, socket.AF_UNSPEC))
    assert [r["host"] for r in v6] == [PUBLIC_V6]
    assert [r["host"] for r in both] == [PUBLIC_V4, PUBLIC_V6]
    assert all(r["hostname"] == "dual.example.com" and r["port"] == 443 for r in both)


# -- at send time: what is actually dialled ----------------------------------------------


def _message() -> Message:
    return Message(
        idempotency_id="msg_ssrf_1",
        subject="s",
        text="t",
        payload={"type": "signal.created", "version": 1, "timestamp": "2025-01-01T00:00:00Z", "data": {}},
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def _send(url: str, context: ChannelContext, sink: HttpSink | None = None) -> object:
    async def run() -> object:
        ssl_context = sink.client_ssl() if isinstance(sink, HttpsSink) else None
        async with make_http_session(context, ssl_context=ssl_context) as session:
            context.http = session
            try:
                channel = WebhookChannel.from_url(url, context, secrets=[new_secret()])
                return await channel.send(_message())
            finally:
                context.http = None

    return asyncio.run(run())


def test_loopback_sink_reached_only_with_allow_loopback(http_sink: HttpSink) -> None:
    url = "webhook+" + http_sink.url("/hook")
    with pytest.raises(UnsafeTarget):
        _send(url, ChannelContext(allow_loopback=False))
    assert http_sink.requests == []
    _send(url, ChannelContext(allow_loopback=True))
    assert [r.path for r in http_sink.requests] == ["/hook"]


def test_dialled_address_is_the_vetted_one_and_tls_verifies_the_name(https_sink: HttpsSink) -> None:
    """A name resolved by the guard: the request reaches the vetted IP, Host and SNI keep the name."""
    asked, resolver = stub({TLS_HOSTNAME: ["127.0.0.1"]})
    context = ChannelContext(allow_loopback=True, resolver=resolver)
    _send("webhook+" + https_sink.url("/hook"), context, https_sink)
    assert [r.headers["host"] for r in https_sink.requests] == [f"{TLS_HOSTNAME}:{https_sink.port}"]
    assert asked == [TLS_HOSTNAME]


def test_certificate_is_checked_against_the_name_not_the_ip(https_sink: HttpsSink) -> None:
    _, resolver = stub({"other.example": ["127.0.0.1"]})
    context = ChannelContext(allow_loopback=True, resolver=resolver)
    with pytest.raises(DeliveryError, match=r"(?i)certificate"):
        _send("webhook+" + https_sink.url("/hook", host="other.example"), context, https_sink)
    assert https_sink.requests == []


def test_dns_rebinding_cannot_reach_loopback(https_sink: HttpsSink) -> None:
    """Public on the first answer (the registration check), loopback on the second (the dial)."""
    answers = [[PUBLIC_V4], ["127.0.0.1"]]
    asked: list[str] = []

    async def rebinding(host: str) -> Sequence[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    context = ChannelContext(allow_loopback=False, resolver=rebinding)
    url = "webhook+" + https_sink.url("/hook")
    # Registration: the URL and the name's first answer pass.
    assert asyncio.run(resolve_safe(TLS_HOSTNAME, https_sink.port, resolver=rebinding)) == [PUBLIC_V4]
    # Send: the connection-time answer is vetted again and refused; nothing reaches 127.0.0.1.
    with pytest.raises(UnsafeTarget, match=re.escape("127.0.0.1, a loopback address")):
        _send(url, context, https_sink)
    assert len(asked) == 2
    assert https_sink.requests == []


def test_public_then_private_answer_refused_at_send(https_sink: HttpsSink) -> None:
    _, resolver = stub({TLS_HOSTNAME: [PUBLIC_V4, "127.0.0.1"]})
    with pytest.raises(UnsafeTarget, match=re.escape("127.0.0.1")):
        _send("webhook+" + https_sink.url("/hook"), ChannelContext(resolver=resolver), https_sink)
    assert https_sink.requests == []


def test_stored_loopback_endpoint_refused_when_the_policy_tightens(http_sink: HttpSink) -> None:
    """Registered while loopback was allowed; the send-time check refuses it once it is not."""
    url = "webhook+" + http_sink.url("/hook")

    async def run() -> None:
        lax = ChannelContext(allow_loopback=True)
        channel = WebhookChannel.from_url(url, lax, secrets=[new_secret()])
        strict = ChannelContext(allow_loopback=False)
        async with make_http_session(strict) as session:
            strict.http = session
            channel.context = strict
            with pytest.raises(UnsafeTarget):
                await channel.send(_message())

    asyncio.run(run())
    assert http_sink.requests == []


def test_a_plain_session_is_refused() -> None:
    """A session without the guard cannot be slipped into the context."""

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ConfigError):
                WebhookChannel.from_url("webhook+https://hooks.example.com/", ChannelContext(http=session))

    asyncio.run(run())
