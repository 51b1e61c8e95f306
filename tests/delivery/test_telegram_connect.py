"""Connecting a Telegram chat and the bot's commands, end to end against a local fake Bot API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient

from signalmint.config import DeliveryConfig, PlanConfig, Settings, TelegramConfig
from signalmint.delivery.channels.base import ChannelContext
from signalmint.delivery.channels.telegram import close, run_polling, telegram_bot
from signalmint.delivery.fanout import FanOut
from signalmint.delivery.pacing import Pacer
from signalmint.delivery.telegram_commands import StoreCommands
from signalmint.delivery.worker import Worker
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import list_deliveries, list_endpoints
from signalmint.store.plans import load_plans
from signalmint.web.app import create_app

from .test_telegram import TOKEN, FakeBotApi, base_url, fake, fake_server  # noqa: F401 (fixtures)


class SkipAhead:
    """Virtual time for the bot's pacer: a sleep moves the clock on at once (the bot answers one
    update at a time, so nothing else is waiting on the clock meanwhile)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class Bot:
    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        now = datetime.now(UTC)
        db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
        self.settings = Settings(
            database=db.url,
            secret="telegram-test-secret-0123456789",
            telegram=TelegramConfig(token=TOKEN, bot="signalmint_bot", base_url=url),
            delivery=DeliveryConfig(allow_loopback_targets=True),
            plans=[
                PlanConfig(id="free", channels=["web"]),
                PlanConfig(id="premium", price=2900, channels=["web", "telegram"]),
            ],
        )
        self.app = create_app(self.settings, db)
        self.ctx = self.app.state.ctx
        plans = {p.id: p for p in db.read_sync(load_plans, current_only=True).values()}
        self.keys: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        for name in ("free", "premium"):

            def write(conn: Any, name: str = name) -> int:
                person = ensure_subscriber(conn, f"{name}@example.com", now)
                confirm_subscriber(conn, person.id, now)
                start_subscription(conn, person.id, plans[name], now, origin="test", state="active")
                return int(person.id)

            self.ids[name] = db.write_sync(write)
            self.keys[name] = asyncio.run(self.ctx.accounts.create_key("k", subscriber_id=self.ids[name]))[1]
        self.client = TestClient(self.app)
        self.context = ChannelContext(telegram_token=TOKEN, telegram_base_url=url)
        # Telegram's limits as in production (one message a second per chat), in virtual time:
        # the pacing itself is tested in test_pacing and, in real time, in test_telegram.
        self.time = SkipAhead()
        self.context.extra["telegram.pacer"] = Pacer(1.0, 30.0, clock=self.time.clock, sleep=self.time.sleep)

    def link(self, who: str) -> Any:
        return self.client.post("/api/v1/me/telegram", headers={"Authorization": f"Bearer {self.keys[who]}"})

    def chat(self, api: FakeBotApi, chat_id: int, *texts: str) -> list[str]:
        """Send commands from a chat and run the bot until it answered them all."""
        start = len(api.updates) + 10 * len(api.calls)
        api.updates.clear()  # the real Bot API forgets updates once a later offset confirms them
        before = len(api.to(str(chat_id)))
        for i, text in enumerate(texts):
            api.updates.append({"update_id": 1000 + start + i, "message": {"chat": {"id": chat_id}, "text": text}})

        async def run() -> None:
            stop = asyncio.Event()
            bot = telegram_bot(self.context, TOKEN)
            commands = StoreCommands(
                self.db, self.ctx.pepper, base_url="https://alerts.example.com", tips=self.ctx.settings.billing.tips
            )
            task = asyncio.create_task(run_polling(bot, commands, stop, timeout=0.2))
            deadline = asyncio.get_running_loop().time() + 10
            while len(api.to(str(chat_id))) < before + len(texts) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await task
            await close(self.context)

        asyncio.run(run())
        return [c.text for c in api.to(str(chat_id))][before:]


@pytest.fixture
def bot(db: Database, base_url: str) -> Bot:  # noqa: F811 (the imported fixture)
    return Bot(db, base_url)


def test_a_chat_connects_by_deep_link_once_and_obeys_commands(bot: Bot, fake: FakeBotApi) -> None:  # noqa: F811
    response = bot.link("premium")
    assert response.status_code == 200
    link = response.json()["link"]
    assert link.startswith("https://t.me/signalmint_bot?start=")
    token = parse_qs(urlparse(link).query)["start"][0]
    replies = bot.chat(fake, 4242, f"/start {token}", "/status", "/pause", "/status", "/resume")
    assert replies[0].startswith("Connected.")
    assert "Alerts in this chat: on" in replies[1]
    assert replies[2].startswith("Paused") and "paused" in replies[3]
    assert replies[4].startswith("Resumed")
    (endpoint,) = [e for e in bot.db.read_sync(list_endpoints) if e.channel == "telegram"]
    assert endpoint.url == "telegram://4242" and endpoint.subscriber_id == bot.ids["premium"]
    assert endpoint.status == "active"
    again = bot.chat(fake, 5151, f"/start {token}")  # the link works once
    assert "expired or was already used" in again[0]
    assert bot.chat(fake, 5151, "/pause")[0] == "This chat is not connected."


def test_tip_from_the_bot_links_to_the_tip_jar(bot: Bot, fake: FakeBotApi) -> None:  # noqa: F811
    replies = bot.chat(fake, 7777, "/tip", "/tip 5", "/tip 0.10", "/tip lots", "/tip 100000")
    assert replies[0] == "Thank you! Leave your tip here: https://alerts.example.com/tip"
    assert replies[1].endswith("https://alerts.example.com/tip?amount=500")
    assert replies[2] == "Tips go from 1 to 1000."  # below the 1.00 minimum
    assert replies[3] == "Say how much as a number, e.g. /tip 5"
    assert replies[4] == "Tips go from 1 to 1000."


def test_plans_without_telegram_get_no_link(bot: Bot) -> None:
    assert bot.link("free").status_code == 403


def test_alerts_arrive_in_the_chat_and_a_blocked_bot_pauses_the_endpoint(bot: Bot, fake: FakeBotApi) -> None:  # noqa: F811
    token = parse_qs(urlparse(bot.link("premium").json()["link"]).query)["start"][0]
    bot.chat(fake, 4242, f"/start {token}")
    fanout = FanOut({"telegram"})
    now = datetime.now(UTC)
    for minutes in (2, 1):
        signal = Signal(
            "spikes", "AAPL", now - timedelta(minutes=minutes), "volume_spike", 9.0, {"ratio": 9.0, "volume": 1e6}
        )
        bot.db.write_sync(commit_tick, "spikes", Frame.empty(), [signal], None, fanout)
    fake.fail("4242", 403, "Forbidden: bot was blocked by the user")  # the second alert finds the bot blocked

    async def drain() -> None:
        worker = Worker(bot.settings, bot.db, bot.context, bot.ctx.pepper)
        for _ in range(3):
            await worker.run_once()
        await close(bot.context)

    asyncio.run(drain())
    rows = bot.db.read_sync(list_deliveries)
    assert sorted(d.status for d in rows) == ["dead", "sent"]
    delivered = [c for c in fake.to("4242") if "traded" in c.text]
    assert len(delivered) == 1 and "AAPL" in delivered[0].text
    (endpoint,) = [e for e in bot.db.read_sync(list_endpoints) if e.channel == "telegram"]
    assert endpoint.status == "paused" and "blocked" in endpoint.status_reason
