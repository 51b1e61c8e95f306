"""The demo: two automations on bundled real data and a live synthetic market."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..accounts.mail import LogMailer
from ..accounts.service import Accounts, server_pepper
from ..config import (
    AdminConfig,
    AutomationConfig,
    DetectorConfig,
    EmailConfig,
    OutcomesConfig,
    PlanConfig,
    PluginConfig,
    Settings,
    WebConfig,
)
from ..store import Database
from ..store.accounts import confirm_subscriber, ensure_subscriber, set_watchlist, start_subscription
from ..store.plans import sync_plans
from .shop import KEYWORDS, LocalShop

__all__ = ["DemoAccount", "demo_plans", "demo_settings", "seed_demo"]

NUMBERS = ["volume", "baseline", "ratio", "z", "mad", "price_change", "score"]


def demo_plans() -> list[PlanConfig]:
    """The flagship's three tiers (see README: "Plans").

    The API is a term of each plan, sold as a ladder: free and premium get a small monthly
    quota (refused beyond it), pro a large one with overage, at rising rates. The pricing
    cards and the dashboard render these terms (``api_terms``), and the API enforces them for
    keys and browser sessions alike.
    """
    return [
        PlanConfig(
            id="free",
            name="Free",
            description="Delayed alerts on a few symbols you choose, and a taste of the API.",
            delay=timedelta(minutes=15),
            watchlist=3,
            channels=["web", "email", "rss", "api"],
            masked_fields=NUMBERS,
            reveal_after=timedelta(hours=24),
            alerts_per_day=10,
            api_quota=300,
            rate_per_second=1,
            burst=5,
        ),
        PlanConfig(
            id="premium",
            name="Premium",
            description="Every signal the moment it happens, on every channel; 1,000 API calls a month.",
            price=2900,
            channels=["web", "email", "telegram", "webhook", "apprise", "rss", "api"],
            api_quota=1_000,
            rate_per_second=2,
            burst=10,
        ),
        PlanConfig(
            id="pro",
            name="Pro",
            description="Premium plus the API as a product: 10,000 calls a month, then 1 cent a call.",
            price=9900,
            trial_days=7,
            channels=["web", "email", "telegram", "webhook", "apprise", "rss", "api"],
            api_quota=10_000,
            overage_price=1,
            rate_per_second=20,
            burst=40,
        ),
    ]


def demo_settings(
    database: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    speed: float = 1.0,
    admin_password: str | None = None,
    smtp_port: int | None = None,
    shop: LocalShop | None = None,
) -> Settings:
    """Settings for ``signalmint demo``; ``speed`` multiplies the default pace of both feeds.

    At speed 1 the stock history replays ten trading days a second and the
    synthetic market makes one one-minute bar per second. ``smtp_port`` is the demo's mail
    catcher on 127.0.0.1 (see :mod:`signalmint.demo.mailcatcher`): all email goes there. ``shop``
    (see :mod:`signalmint.demo.shop`), a local shop and news feed already started, adds two
    more businesses reading it: ``shop-price-drop`` and ``news-keyword``.
    """
    interval = 1.0 / speed
    volume_spike = {"window": 30, "ratio": 3.0, "z": 4.0}
    return Settings(
        database=database,
        web=WebConfig(host=host, port=port, title="signalmint demo"),
        base_url=f"http://{f'[{host}]' if ':' in host else host}:{port}",
        demo=True,
        email=EmailConfig(
            host="127.0.0.1", port=smtp_port, starttls=False, sender="signalmint demo <alerts@demo.example>"
        )
        if smtp_port
        else EmailConfig(),
        plans=demo_plans(),
        admin=AdminConfig(email="owner@demo.invalid", password=admin_password),
        checkpoint_every=timedelta(seconds=5),
        automations=[
            AutomationConfig(
                name="us-stocks-volume",
                title="US stocks · unusual volume",
                description=(
                    "Real daily volume of AAPL, GOOG, IBM, MSFT and FB (2000–2013, public domain), "
                    "replayed fast-forward, then again and again on a 15-minute clock so the feed never stops. "
                    "Every signal here is a real historical event."
                ),
                source=PluginConfig(kind="bokeh_stocks", pace=0.1 / speed, loop=True),
                detector=DetectorConfig(kind="volume_spike", cooldown=timedelta(days=5), **volume_spike),
                retention=None,
                outcomes=OutcomesConfig(horizons=[1, 5, 20], every=timedelta(seconds=15)),
            ),
            AutomationConfig(
                name="synthetic-volume",
                title="Synthetic market · 500 symbols",
                description=(
                    "A live simulated market of 500 symbols with spikes injected at known times; "
                    "one-minute bars compressed to one per second."
                ),
                source=PluginConfig(kind="synthetic", symbols=500, seed=7, interval=interval),
                detector=DetectorConfig(kind="volume_spike", cooldown=timedelta(seconds=30 * interval), **volume_spike),
                retention=timedelta(seconds=600 * interval),
            ),
            *([] if shop is None else _niche_automations(shop, interval)),
        ],
    )


def _niche_automations(shop: LocalShop, interval: float) -> list[AutomationConfig]:
    """The demo's shop and feed businesses, polling its own loopback server every 5 s (at speed 1)."""
    polite = {"allow_private": True, "host_interval": 0, "retries": 1, "backoff": 0.2, "timeout": 5}
    return [
        AutomationConfig(
            name="shop-price-drop",
            title="Shops · price drops",
            description=(
                "Four products on the demo's own local shop, read from their pages' schema.org data "
                "every few seconds; an alert when a price falls by 10% or more."
            ),
            source=PluginConfig(kind="web_page", urls=shop.product_urls, interval=5 * interval, **polite),
            detector=DetectorConfig(kind="price_drop", pct=10, include=["title", "url"]),
            retention=None,
            # did each drop hold for 5, 15 and 30 s (at speed 1; the pages report changes only,
            # so a time, not a count of observations): against random earlier moments
            outcomes=OutcomesConfig(
                horizons=sorted({max(1, round(h * interval)) for h in (5, 15, 30)}),
                unit="seconds",
                every=timedelta(seconds=5),
            ),
        ),
        AutomationConfig(
            name="news-keyword",
            title="News · keyword alerts",
            description=(
                "The demo's local news feed (RSS), read every few seconds; an alert for each new story "
                f"mentioning {', '.join(KEYWORDS)}."
            ),
            source=PluginConfig(kind="rss", urls=[shop.feed_url], interval=5 * interval, **polite),
            detector=DetectorConfig(kind="new_item", match=KEYWORDS, fields=["title", "text"]),
            retention=None,
        ),
    ]


@dataclass(frozen=True, slots=True)
class DemoAccount:
    role: str
    email: str
    plan: str | None
    api_key: str


def seed_demo(settings: Settings, db: Database) -> list[DemoAccount]:
    """A free, a premium and a pro subscriber and an admin, each with a fresh API key."""
    now = datetime.now(UTC)
    plans = {p.id: p for p in db.write_sync(sync_plans, settings.current_plans(), now)}
    accounts = Accounts(settings, db, LogMailer(), server_pepper(settings, db))
    out: list[DemoAccount] = []

    def subscriber(email: str, plan_id: str, watch: list[str]) -> int:
        def write(conn):  # type: ignore[no-untyped-def]
            person = ensure_subscriber(conn, email, now)
            confirm_subscriber(conn, person.id, now)
            start_subscription(conn, person.id, plans[plan_id], now, origin="demo", state="active")
            if watch:
                set_watchlist(conn, person.id, watch, now)
            return person.id

        return int(db.write_sync(write))

    async def keys() -> None:
        for role, email, watch in (
            ("free", "free@demo.invalid", ["AAPL", "MSFT", "SYN001"]),
            ("premium", "premium@demo.invalid", []),
            ("pro", "pro@demo.invalid", []),
        ):
            sid = subscriber(email, role, watch)
            _, text = await accounts.create_key("demo", subscriber_id=sid)
            out.append(DemoAccount(role, email, role, text))
        _, text = await accounts.create_key("demo admin", subscriber_id=None, admin=True)
        out.append(DemoAccount("admin", settings.admin.email or "", None, text))

    asyncio.run(keys())
    return out


def new_admin_password() -> str:
    return secrets.token_urlsafe(12)
