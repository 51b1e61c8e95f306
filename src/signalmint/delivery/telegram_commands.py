"""What the operator's Telegram bot does, on the store: connect a chat, /status, /pause,
/resume, /watchlist and /tip.

A subscriber asks for a connect link (``POST /api/v1/me/telegram``): a one-time token, stored
hashed, inside ``https://t.me/<bot>?start=<token>``. The bot's ``/start <token>`` consumes it
and registers ``telegram://<chat id>`` as the subscriber's endpoint (if their plan includes
Telegram). The commands act on the endpoint of the chat they come from, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ..accounts.credentials import hash_token, new_token
from ..config import TipsConfig
from ..errors import LimitError
from ..records import Endpoint, Plan, Subscription
from ..store import Database
from ..store.accounts import current_subscription, get_watchlist, set_watchlist
from ..store.auth import consume_token, issue_token
from ..store.outbox import add_endpoint, list_endpoints, set_endpoint_status
from ..store.plans import load_plans
from .channels.telegram import Update, deep_link

__all__ = ["CONNECT_TTL", "StoreCommands", "connect_link"]

CONNECT_TTL = timedelta(hours=1)
KEY = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


async def connect_link(db: Database, pepper: bytes, bot: str, subscriber_id: int, email: str) -> str:
    """A one-time ``t.me`` link that connects the chat that opens it to this subscriber."""
    text, digest = new_token(pepper)
    now = datetime.now(UTC)
    await db.write(
        issue_token, hash=digest, purpose="telegram", email=email, subscriber_id=subscriber_id, now=now,
        expires_at=now + CONNECT_TTL,
    )  # fmt: skip
    return deep_link(bot, text)


class StoreCommands:
    """The bot's commands against the store (implements ``channels.telegram.BotCommands``)."""

    def __init__(self, db: Database, pepper: bytes, *, base_url: str = "", tips: TipsConfig | None = None) -> None:
        self.db = db
        self.pepper = pepper
        self.base_url = base_url.rstrip("/")
        self.tips = tips

    def _endpoint(self, chat_id: int) -> Endpoint | None:
        url = f"telegram://{chat_id}"
        found = [e for e in self.db.read_sync(list_endpoints) if e.channel == "telegram" and e.url == url]
        return found[-1] if found else None

    def _plan(self, subscriber_id: int) -> tuple[Subscription | None, Plan | None]:
        subscription = self.db.read_sync(current_subscription, subscriber_id)
        if subscription is None:
            return None, None
        plan = self.db.read_sync(load_plans).get((subscription.plan_id, subscription.plan_version))
        return subscription, plan

    async def start(self, chat_id: int, token: str, update: Update) -> str:
        if len(token) > 100:
            return "That link is not valid. Open a new one from your account page."
        now = datetime.now(UTC)
        row = await self.db.write(consume_token, hash_token(token, self.pepper), "telegram", now)
        if row is None or row.subscriber_id is None:
            return "That link has expired or was already used. Open a new one from your account page."
        _, plan = self._plan(row.subscriber_id)
        if plan is None or "telegram" not in plan.channels:
            return "Your plan does not include Telegram alerts. Upgrade on the website to get them here."
        existing = self._endpoint(chat_id)
        if existing is not None and existing.subscriber_id == row.subscriber_id:
            await self.db.write(set_endpoint_status, existing.id, "active", "", now)
        else:
            if existing is not None:  # the chat moves to the account that opened the newest link
                await self.db.write(set_endpoint_status, existing.id, "disabled", "connected to another account", now)
            try:
                await self.db.write(add_endpoint, row.subscriber_id, "telegram", f"telegram://{chat_id}", now)
            except LimitError as exc:
                return f"Not connected: {exc} on the website."
        return (
            f"Connected. Your {plan.name} alerts will arrive in this chat. /pause stops them, /status shows your plan."
        )

    async def status(self, chat_id: int) -> str:
        endpoint = self._endpoint(chat_id)
        if endpoint is None or endpoint.status == "disabled":
            return "This chat is not connected. Open the Telegram link on your account page."
        subscription, plan = self._plan(endpoint.subscriber_id)
        name = plan.name if plan else "no plan"
        state = subscription.state if subscription else "none"
        here = "on" if endpoint.status == "active" else f"paused ({endpoint.status_reason or 'by you'})"
        return f"Plan: {name} ({state}). Alerts in this chat: {here}."

    async def pause(self, chat_id: int) -> str:
        endpoint = self._endpoint(chat_id)
        if endpoint is None or endpoint.status == "disabled":
            return "This chat is not connected."
        await self.db.write(set_endpoint_status, endpoint.id, "paused", "paused from Telegram", datetime.now(UTC))
        return "Paused. /resume starts alerts again."

    async def resume(self, chat_id: int) -> str:
        endpoint = self._endpoint(chat_id)
        if endpoint is None or endpoint.status == "disabled":
            return "This chat is not connected."
        await self.db.write(set_endpoint_status, endpoint.id, "active", "", datetime.now(UTC))
        return "Resumed: alerts will arrive here again."

    async def watchlist(self, chat_id: int, args: Sequence[str]) -> str:
        endpoint = self._endpoint(chat_id)
        if endpoint is None or endpoint.status == "disabled":
            return "This chat is not connected."
        sid = endpoint.subscriber_id
        _, plan = self._plan(sid)
        keys = set(self.db.read_sync(get_watchlist, sid))
        if len(args) >= 2 and args[0] in {"add", "remove"}:
            if plan is None or plan.watchlist is None:
                return "Your plan covers its symbols itself; there is no watchlist to change."
            wanted = {a.upper() for a in args[1:]}
            bad = sorted(k for k in wanted if not KEY.match(k))
            if bad:
                return f"Not a symbol: {bad[0]}"
            keys = keys | wanted if args[0] == "add" else keys - wanted
            try:  # the store holds the plan's cap
                await self.db.write(set_watchlist, sid, sorted(keys), datetime.now(UTC))
            except LimitError as exc:
                return f"Your plan follows at most {exc.cap} symbols. Remove one first."
        return "Watchlist: " + (", ".join(sorted(keys)) if keys else "empty (/watchlist add AAPL)")

    async def tip(self, chat_id: int, args: Sequence[str]) -> str:
        """A link to the tip jar, for ``/tip`` or ``/tip 5`` (whole units of the currency)."""
        if self.tips is None or not self.tips.enabled or not self.base_url:
            return "Tips are not open here."
        amount = ""
        if args:
            text = args[0].lstrip("$€£")
            if not re.fullmatch(r"\d{1,6}(\.\d{1,2})?", text):
                return "Say how much as a number, e.g. /tip 5"
            cents = round(float(text) * 100)
            if not self.tips.minimum <= cents <= self.tips.maximum:
                low, high = self.tips.minimum / 100, self.tips.maximum / 100
                return f"Tips go from {low:g} to {high:g}."
            amount = f"?amount={cents}"
        return f"Thank you! Leave your tip here: {self.base_url}/tip{amount}"
