"""SSRF through Apprise URLs (issue 9, item 1): every address any Apprise plugin dials is vetted.

At registration (API and dashboard): every host a reviewed service takes from the URL, such as
``mailto``'s ``smtp=`` and Zulip's organization host, and the service itself (reviewed schemes
only, unless the operator adds more). At send time: on the address actually connected, in the
socket layer, so a name that answered public to the check and private to the plugin (DNS
rebinding) reaches nothing. The listeners are real (uvicorn, aiosmtpd) on 127.0.0.1 and record
every connection; DNS is a scripted table standing in for the system resolver.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from signalmint.config import DeliveryConfig
from signalmint.delivery.channels.apprise import EXTRA_SCHEMES_SETTING, AppriseChannel, vet_apprise_url
from signalmint.delivery.channels.base import ChannelContext, Message
from signalmint.net.dial_guard import Refused, guarded
from signalmint.net.ssrf import UnsafeTarget
from signalmint.store import Database
from signalmint.store.outbox import add_endpoint, list_endpoints
from tests.web.test_account_pages import client_for
from tests.web.test_dashboard import signed_in
from tests.web.test_dashboard_delivery import build, endpoints_of, section

from .conftest import HttpSink
from .test_delivery_api import Site

PUBLIC = "93.184.215.14"
MAILTO_SMTP_LOOPBACK = "mailto://user:pass@93.184.216.34?smtp=127.0.0.1&port={port}&from=a@example.com&to=b@example.com"
ZULIP_LOOPBACK = "zulip://bot@apprise.localhost/abcdefghijklmnopqrstuvwxyzABCDEF"


def message() -> Message:
    return Message(
        idempotency_id="msg_ssrf_ap",
        subject="AAPL volume spike",
        text="AAPL traded 7.5x its usual volume",
        payload={},
        created_at=datetime(2025, 3, 4, tzinfo=UTC),
    )


# -- real listeners that record every connection -----------------------------------------------


class _Kept:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content or b""
        assert isinstance(content, bytes)  # decode_data is off: the message as it came
        self.messages.append(content)
        return "250 OK"


class RecordingSmtp(Controller):
    """aiosmtpd on 127.0.0.1 that records each TCP connection it accepts (not only messages)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        super().__init__(_Kept(), hostname="127.0.0.1", port=port)
        self.peers: list[Any] = []

    def factory(self) -> SMTP:
        peers = self.peers

        class _Recording(SMTP):
            def connection_made(self, transport: Any) -> None:
                peers.append(transport.get_extra_info("peername"))
                super().connection_made(transport)

        return _Recording(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def smtp() -> Iterator[RecordingSmtp]:
    server = RecordingSmtp()
    server.start()
    server.peers.clear()  # aiosmtpd's own readiness probe
    try:
        yield server
    finally:
        server.stop()


class Dns:
    """Scripted DNS whose answer changes between the guard's check and the plugin's own lookup.

    ``check`` answers the guard's resolver hook (``ChannelContext.resolver``, as in the webhook
    rebinding tests); ``dial`` answers the system resolver (``socket.getaddrinfo``), which is
    what requests and smtplib ask when the plugin connects. ``asked`` lists (who, name).
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, check: dict[str, str], dial: dict[str, str] | None = None
    ) -> None:
        self.check, self.dial = check, dial or {}
        self.asked: list[tuple[str, str]] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in self.dial:
            return self._real(host, port, *args, **kwargs)
        self.asked.append(("dial", host))
        ip = self.dial[host]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port or 0)))]

    async def resolve(self, host: str) -> Sequence[str]:
        self.asked.append(("check", host))
        return [self.check[host]]


# -- registration ------------------------------------------------------------------------------


def test_mailto_smtp_parameter_is_refused_through_the_api(db: Database) -> None:
    site = Site(db, loopback=False)
    url = MAILTO_SMTP_LOOPBACK.format(port=2525)
    response = site.call("POST", "/api/v1/me/endpoints", "premium", json={"channel": "apprise", "url": url})
    assert response.status_code == 422, response.text
    assert "127.0.0.1 is a loopback address" in response.json()["detail"]
    assert [e.channel for e in site.db.read_sync(list_endpoints, site.ids["premium"])] == ["email"]


def test_mailto_smtp_parameter_is_refused_through_the_dashboard(db: Database) -> None:
    app = build(db, loopback=False)
    with client_for(app) as client:
        csrf = signed_in(client, app, "alerts")
        url = MAILTO_SMTP_LOOPBACK.format(port=2525)
        refused = client.post("/dashboard/endpoints", data={"channel": "apprise", "url": url, "csrf": csrf})
        assert refused.status_code == 400
        card = section(refused.text)
        assert "We cannot send there:" in card and "127.0.0.1 is a loopback address" in card
    assert [e.channel for e in endpoints_of(db)] == ["email"]


@pytest.mark.parametrize(
    "url",
    [
        ZULIP_LOOPBACK,  # dials https://apprise.localhost/...
        "zulip://bot@org.10.0.0.7/abcdefghijklmnopqrstuvwxyzABCDEF",
        "mailtos://user:pass@example.com?smtp=169.254.169.254&from=a@example.com",
        "mailto://user:pass@localhost?from=a@example.com&to=b@example.com",  # the SMTP host is the URL's host
        "mailto://user:pass@example.com?smtp=mail.internal&from=a@example.com",
        "mailto://user:pass@example.com?to=b@keys.localhost&wkd=yes",  # OpenPGP keys from the recipient domain
    ],
)
def test_every_host_taken_from_the_url_is_vetted(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        vet_apprise_url(url)
    with pytest.raises(UnsafeTarget):
        AppriseChannel.from_url(f"apprise+{url}", ChannelContext())


def test_a_zulip_host_on_loopback_is_refused_through_the_api(db: Database) -> None:
    site = Site(db, loopback=False)
    response = site.call("POST", "/api/v1/me/endpoints", "premium", json={"channel": "apprise", "url": ZULIP_LOOPBACK})
    assert response.status_code == 422, response.text
    assert "apprise.localhost is a loopback name" in response.json()["detail"]


def test_public_email_and_zulip_urls_pass() -> None:
    assert vet_apprise_url("mailtos://user:pass@gmail.com") == ["smtp.gmail.com", "gmail.com"]
    assert vet_apprise_url("zulip://bot@apprise/abcdefghijklmnopqrstuvwxyzABCDEF") == ["apprise.zulipchat.com"]


def test_a_stored_smtp_loopback_endpoint_gets_no_connection_from_the_test_event(
    db: Database, smtp: RecordingSmtp
) -> None:
    """Registered before this fix (straight into the store): the test event refuses it, nothing connects."""
    site = Site(db, loopback=False)
    url = "apprise+" + MAILTO_SMTP_LOOPBACK.format(port=smtp.port)
    endpoint = site.db.write_sync(add_endpoint, site.ids["premium"], "apprise", url, datetime.now(UTC))
    result = site.call("POST", f"/api/v1/me/endpoints/{endpoint.id}/test", "premium").json()
    assert result["ok"] is False and result["permanent"] is True
    assert "127.0.0.1 is a loopback address" in result["error"]
    assert smtp.peers == [] and smtp.handler.messages == []


# -- the reviewed schemes, and the operator's additions -----------------------------------------


def test_a_scheme_not_reviewed_is_refused_naming_the_setting(db: Database) -> None:
    site = Site(db, loopback=False)
    body = {"channel": "apprise", "url": "rsyslog://logs.example.com"}
    response = site.call("POST", "/api/v1/me/endpoints", "premium", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "rsyslog://" in detail and EXTRA_SCHEMES_SETTING in detail and "mailto" in detail
    with pytest.raises(UnsafeTarget, match=EXTRA_SCHEMES_SETTING):
        AppriseChannel.from_url("apprise+rsyslog://logs.example.com", ChannelContext())  # stored earlier

    delivery = DeliveryConfig(apprise_extra_schemes=["rsyslog"])
    site.ctx.settings = site.ctx.settings.model_copy(update={"delivery": delivery})
    assert site.call("POST", "/api/v1/me/endpoints", "premium", json=body).status_code == 201
    AppriseChannel.from_url(
        "apprise+rsyslog://logs.example.com", ChannelContext(apprise_schemes=frozenset({"rsyslog"}))
    )
    with pytest.raises(UnsafeTarget):  # added schemes still get their host vetted
        vet_apprise_url("rsyslog://10.0.0.5", extra_schemes=["rsyslog"])


# -- send time: the address actually connected ---------------------------------------------------


def test_dns_rebinding_cannot_make_apprise_reach_loopback(monkeypatch: pytest.MonkeyPatch, http_sink: HttpSink) -> None:
    """Public to the checks, 127.0.0.1 when the plugin resolves the name itself: nothing arrives."""
    dns = Dns(monkeypatch, check={"rebind.example.com": PUBLIC}, dial={"rebind.example.com": "127.0.0.1"})
    url = f"apprise+json://rebind.example.com:{http_sink.port}/notify"
    assert vet_apprise_url(url) == ["rebind.example.com"]  # registration: no DNS
    channel = AppriseChannel.from_url(url, ChannelContext(resolver=dns.resolve))
    with pytest.raises(UnsafeTarget, match=rf"refused to connect to 127\.0\.0\.1 \(port {http_sink.port}\)") as info:
        asyncio.run(channel.send(message()))
    assert info.value.permanent
    assert dns.asked == [("check", "rebind.example.com"), ("dial", "rebind.example.com")]
    assert http_sink.requests == []


def test_an_smtp_server_name_rebinding_to_loopback_gets_no_connection(
    monkeypatch: pytest.MonkeyPatch, smtp: RecordingSmtp
) -> None:
    dns = Dns(
        monkeypatch,
        check={"mail.example.com": PUBLIC, "example.com": PUBLIC},
        dial={"mail.example.com": "127.0.0.1"},
    )
    url = f"apprise+mailto://example.com?smtp=mail.example.com&port={smtp.port}&from=a@example.com&to=b@example.com"
    assert vet_apprise_url(url) == ["mail.example.com", "example.com"]
    channel = AppriseChannel.from_url(url, ChannelContext(resolver=dns.resolve))
    with pytest.raises(UnsafeTarget, match=r"127\.0\.0\.1 \(port \d+\): a loopback address"):
        asyncio.run(channel.send(message()))
    # the SMTP server is checked, then dialled; the mail domain (not dialled) is not resolved at all
    assert dns.asked == [("check", "mail.example.com"), ("dial", "mail.example.com")]
    assert smtp.peers == [] and smtp.handler.messages == []


def test_a_zulip_name_resolving_to_loopback_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = Dns(monkeypatch, check={"org.example.com": "127.0.0.1"}, dial={"org.example.com": "127.0.0.1"})
    channel = AppriseChannel.from_url(
        "apprise+zulip://bot@org.example.com/abcdefghijklmnopqrstuvwxyzABCDEF", ChannelContext(resolver=dns.resolve)
    )
    with pytest.raises(UnsafeTarget, match=r"org\.example\.com resolves to 127\.0\.0\.1, a loopback address"):
        asyncio.run(channel.send(message()))
    assert dns.asked == [("check", "org.example.com")]  # refused before Apprise runs


def test_the_smtp_listener_is_reached_when_loopback_is_allowed(smtp: RecordingSmtp) -> None:
    """The control: the same path with the operator's loopback allowance does connect and deliver."""
    url = f"apprise+mailto://example.com?smtp=127.0.0.1&port={smtp.port}&from=a@example.com&to=b@example.com"
    assert vet_apprise_url(url, allow_loopback=True) == ["127.0.0.1", "example.com"]
    receipt = asyncio.run(AppriseChannel.from_url(url, ChannelContext(allow_loopback=True)).send(message()))
    assert receipt.channel == "apprise"
    assert len(smtp.peers) == 1 and len(smtp.handler.messages) == 1


# -- the scope itself ----------------------------------------------------------------------------


def test_the_scope_follows_copied_contexts_and_nothing_else(http_sink: HttpSink) -> None:
    """Inside: refused, also in a thread given a copy of the context. Outside, at the same time: untouched."""
    address = ("127.0.0.1", http_sink.port)
    outcomes: dict[str, str] = {}
    inside_started = threading.Event()
    outside_done = threading.Event()

    def dial(label: str) -> None:
        try:
            socket.create_connection(address, timeout=5).close()
            outcomes[label] = "connected"
        except Refused as exc:
            outcomes[label] = str(exc.unsafe)

    def outside() -> None:
        inside_started.wait(5)
        dial("outside")
        outside_done.set()

    other = threading.Thread(target=outside)
    other.start()
    with guarded() as scope:
        inside_started.set()
        outside_done.wait(5)  # the other thread dials while this scope is open
        dial("inside")
        copied = contextvars.copy_context()
        worker = threading.Thread(target=copied.run, args=(dial, "copied"))
        worker.start()
        worker.join(5)
    other.join(5)
    dial("after")
    assert outcomes["outside"] == "connected" and outcomes["after"] == "connected"
    assert "127.0.0.1" in outcomes["inside"] and "loopback" in outcomes["copied"]
    assert len(scope.refused) == 2


def test_names_and_unix_sockets_are_refused_in_scope(tmp_path: Any) -> None:
    with guarded(allow_loopback=True):
        with socket.socket() as sock, pytest.raises(Refused, match="not a numeric address"):
            sock.connect(("localhost", 9))
        with socket.socket(socket.AF_UNIX) as unix, pytest.raises(Refused, match="not an internet address"):
            unix.connect(str(tmp_path / "s"))
