"""A third-party channel, installed from a small package built in a temporary folder.

The package is what ``pip install`` would leave in site-packages: its module next to an
``acme_channel-0.1.dist-info`` holding ``METADATA`` and ``entry_points.txt`` with a
``signalmint.channels`` entry. Putting that folder on ``sys.path`` is all importlib.metadata
needs to find it, so the test is honest (the same discovery as a real install) and takes no
network and no build. It proves the registry finds the channel, the config accepts its kind,
the worker delivers through it to a local sink, and it passes the conformance suite.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from signalmint.config import PlanConfig, Settings, delivery_channels
from signalmint.delivery.fanout import FanOut
from signalmint.delivery.runner import channel_context
from signalmint.delivery.worker import Worker
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame
from signalmint.registry import Registry, all_channels, channel_class, channel_kinds, default_registry
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint, counts_by_status, list_endpoints
from signalmint.store.plans import load_plans, sync_plans
from signalmint.testing import ChannelSink, check_channel
from signalmint.web.app import create_app
from signalmint.web.endpoint_ops import subscriber_channels

from .conftest import HttpSink
from .test_outbox import PEPPER, spike

CHANNEL = '''
"""Acme: posts the payload as JSON to ``acme+http(s)://host/path?key=SECRET``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, ClassVar

from signalmint.delivery.channels.base import ChannelContext, Message, Receipt
from signalmint.errors import DeliveryError


class AcmeChannel:
    kind: ClassVar[str] = "acme"
    scheme: ClassVar[str] = "acme"
    url_prefix: ClassVar[str] = "acme+"
    title: ClassVar[str] = "Acme"
    subscriber_added: ClassVar[bool] = False
    for_people: ClassVar[bool] = False
    renders_chart: ClassVar[bool] = False
    requires: ClassVar[str | None] = None
    takes_secrets: ClassVar[bool] = False

    def __init__(self, target: str) -> None:
        self.target = target

    @classmethod
    def from_url(cls, url: str, context: ChannelContext) -> AcmeChannel:
        if not url.startswith((cls.url_prefix + "http://", cls.url_prefix + "https://")):
            raise DeliveryError(f"not an {cls.kind} URL: write {cls.url_prefix}https://...", permanent=True)
        return cls(url.removeprefix(cls.url_prefix))

    @classmethod
    def example_url(cls, sink: Any) -> str:
        return f"{cls.url_prefix}{sink.http_url}/acme?key={sink.secret}"

    def to_url(self, redact: bool = True) -> str:
        base, _, query = self.target.partition("?")
        return self.url_prefix + base + ("?key=***" if redact and query else ("?" + query if query else ""))

    def __repr__(self) -> str:
        return f"AcmeChannel({self.to_url()!r})"

    def _post(self, message: Message) -> int:
        body = json.dumps(dict(message.payload)).encode()
        request = urllib.request.Request(self.target, data=body, method="POST")
        request.add_header("content-type", "application/json")
        request.add_header("idempotency-key", message.idempotency_id)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DeliveryError(f"acme answered {exc.code}", permanent=400 <= exc.code < 500) from None
        except OSError as exc:
            raise DeliveryError(f"acme unreachable: {exc}") from None

    async def send(self, message: Message) -> Receipt:
        status = await asyncio.to_thread(self._post, message)
        return Receipt(channel=self.kind, at=datetime.now(UTC), provider_id=str(status))


class AcmeLinkChannel(AcmeChannel):
    """The same service, added by subscribers themselves (on the dashboard or the API)."""

    kind: ClassVar[str] = "acmelink"
    url_prefix: ClassVar[str] = "acmelink+"
    title: ClassVar[str] = "Acme link"
    subscriber_added: ClassVar[bool] = True
'''


def _install(site: Path) -> None:
    """Lay the package out as an installer would: the module and its dist-info."""
    (site / "acme_channel.py").write_text(textwrap.dedent(CHANNEL), encoding="utf-8")
    info = site / "acme_channel-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-channel\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[signalmint.channels]\nacme = acme_channel:AcmeChannel\nacmelink = acme_channel:AcmeLinkChannel\n",
        encoding="utf-8",
    )


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    _install(site)
    monkeypatch.syspath_prepend(str(site))
    default_registry.cache_clear()
    yield site
    monkeypatch.undo()
    default_registry.cache_clear()
    import sys

    sys.modules.pop("acme_channel", None)


def _plans() -> list[PlanConfig]:
    return [PlanConfig(id="pro", price=900, channels=["web", "acme"])]


def test_before_the_install_the_kind_is_refused() -> None:
    default_registry.cache_clear()
    assert "acme" not in channel_kinds()
    with pytest.raises(ValidationError, match="unknown channel"):
        _plans()


def test_the_registry_and_the_config_take_the_installed_channel(installed: Path) -> None:
    assert "acme" in Registry.from_entry_points().channels
    assert "acme" in channel_kinds() and "acme" in all_channels()
    assert channel_class("acme").__module__ == "acme_channel"
    assert "acmelink" in subscriber_channels() and "acme" not in subscriber_channels()
    assert _plans()[0].channels == ["web", "acme"]  # the plan accepts its kind
    assert "acme" in delivery_channels(Settings(plans=_plans()))  # it requires nothing: always sendable


def test_the_installed_channel_passes_the_conformance_suite(installed: Path, channel_sink: ChannelSink) -> None:
    check_channel(channel_class("acme"), channel_sink)


def test_the_worker_delivers_through_the_installed_channel(installed: Path, db: Database, http_sink: HttpSink) -> None:
    settings = Settings(database=db.url, plans=_plans())
    now = datetime.now(UTC)
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def subscribe(conn: Any) -> None:
        person = ensure_subscriber(conn, "ann@example.com", now)
        confirm_subscriber(conn, person.id, now)
        start_subscription(conn, person.id, plan, now, origin="test", state="active")
        add_endpoint(conn, person.id, "acme", "acme+" + http_sink.url("/acme/ann"), now, [])

    db.write_sync(subscribe)
    fanout = FanOut(delivery_channels(settings))
    (signal,) = db.write_sync(commit_tick, "spikes", Frame.empty(), [spike("AAPL", 1, now)], None, fanout)

    async def drain() -> int:
        context = channel_context(settings)
        worker = Worker(settings, db, context, PEPPER)
        try:
            return await worker.run_once()
        finally:
            await context.http.close()

    assert asyncio.run(drain()) == 1
    (request,) = http_sink.wait_for(1)
    assert request.path == "/acme/ann" and request.json()["data"]["id"] == signal.id
    assert request.headers["idempotency-key"]
    assert db.read_sync(counts_by_status) == {"sent": 1}


def test_subscribers_add_an_installed_channel_that_allows_it(installed: Path, sqlite_db: Database) -> None:
    now = datetime.now(UTC)
    plans = [PlanConfig(id="pro", price=900, channels=["web", "acme", "acmelink"])]
    settings = Settings(database=sqlite_db.url, secret="plugin-api-secret-0123456789", plans=plans)
    sqlite_db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    app = create_app(settings, sqlite_db)
    (plan,) = sqlite_db.read_sync(load_plans, current_only=True).values()

    def subscribe(conn: Any) -> int:
        person = ensure_subscriber(conn, "ann@example.com", now)
        confirm_subscriber(conn, person.id, now)
        start_subscription(conn, person.id, plan, now, origin="test", state="active")
        return int(person.id)

    who = sqlite_db.write_sync(subscribe)
    key = asyncio.run(app.state.ctx.accounts.create_key("k", subscriber_id=who))[1]
    with TestClient(app) as client:

        def add(channel: str, url: str) -> Any:
            body = {"channel": channel, "url": url}
            return client.post("/api/v1/me/endpoints", json=body, headers={"Authorization": f"Bearer {key}"})

        made = add("acmelink", "acmelink+https://hooks.example/in?key=S3cret")
        assert made.status_code == 201, made.text
        assert made.json()["channel"] == "acmelink"
        assert made.json()["url"] == "acmelink+https://hooks.example/in?key=***"  # the plugin's own redaction
        refused = add("acme", "acme+https://hooks.example/in")  # installed, but not added by subscribers
        assert refused.status_code == 422 and "acmelink" in refused.text
        bad = add("acmelink", "acmelink+ftp://hooks.example/in")
        assert bad.status_code == 422 and "write acmelink+https://" in bad.text
    (endpoint,) = [e for e in sqlite_db.read_sync(list_endpoints, who) if e.channel == "acmelink"]
    assert endpoint.url == "acmelink+https://hooks.example/in?key=S3cret"
