"""Subscriber and admin flows: sign-up with double opt-in, magic-link login, sessions, API keys.

Everything secret is stored as a keyed hash (the server secret is the key), so
a copy of the database alone lets nobody log in or call the API.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..config import Settings
from ..errors import AccessError
from ..records import ApiKey, Plan, Subscriber
from ..store import Database
from ..store.accounts import (
    confirm_subscriber,
    current_subscription,
    ensure_subscriber,
    start_subscription,
    subscriber_by_email,
)
from ..store.auth import (
    SessionRow,
    consume_token,
    create_api_key,
    create_session,
    get_or_create_setting,
    get_session,
    issue_token,
    revoke_session,
)
from ..store.outbox import add_endpoint, list_endpoints
from ..store.plans import load_plans
from .credentials import hash_password, hash_token, new_api_key, new_token, verify_password
from .mail import Email, Mailer

__all__ = ["Accounts", "Redeemed", "SignupResult", "server_pepper"]

log = logging.getLogger("signalmint.accounts")

CONFIRM_TTL = timedelta(hours=24)
LOGIN_TTL = timedelta(minutes=15)
SESSION_TTL = timedelta(days=30)
ADMIN_SESSION_TTL = timedelta(hours=12)


def server_pepper(settings: Settings, db: Database) -> bytes:
    """The server secret: from settings (``${ENV}``), else generated once and kept in the store."""
    if settings.secret:
        return settings.secret.encode()
    return db.write_sync(get_or_create_setting, "server_secret", lambda: secrets.token_urlsafe(32)).encode()


@dataclass(frozen=True, slots=True)
class SignupResult:
    subscriber: Subscriber
    link: str  # also emailed; shown on the page only in demo mode
    checkout_plan: Plan | None = None  # the paid plan whose checkout follows the confirmation


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A used link: the new session, and the paid plan to check out next (chosen at sign-up)."""

    session: str
    subscriber_id: int | None
    plan_id: str | None


class Accounts:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        mailer: Mailer,
        pepper: bytes,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.db = db
        self.mailer = mailer
        self.pepper = pepper
        self.clock = clock
        self._admin_hash = settings.admin.password_hash or (
            hash_password(settings.admin.password) if settings.admin.password else None
        )

    def hash(self, text: str) -> str:
        return hash_token(text, self.pepper)

    def _link(self, path: str, token: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}{path}?token={quote(token)}"

    # -- sign-up and login --------------------------------------------------------------

    def public_plan(self, plan_id: str) -> Plan:
        plans = self.db.read_sync(load_plans, current_only=True)
        for plan in plans.values():
            if plan.id == plan_id and plan.public:
                return plan
        raise AccessError(f"there is no plan {plan_id!r} to sign up for")

    async def signup(self, email: str, plan_id: str) -> SignupResult:
        """Create (or find) the subscriber, open the plan, email a confirmation link.

        A plan paid from the first day cannot start before it is paid: the account starts on
        the free plan (if there is one) and the link remembers the paid plan, so using it
        leads straight to that plan's checkout. Only the plan's id travels, in the store:
        its price is read from the plan when the checkout opens.
        """
        if not self.settings.signup:
            raise AccessError("sign-ups are closed")
        plan = self.public_plan(plan_id)
        start: Plan | None = plan
        checkout_plan: Plan | None = None
        if not plan.free and plan.trial_days == 0:
            checkout_plan = plan
            free = [p for p in self.db.read_sync(load_plans, current_only=True).values() if p.free and p.public]
            start = min(free, key=lambda p: p.id) if free else None
        now = self.clock()

        def write(conn):  # type: ignore[no-untyped-def]
            subscriber = ensure_subscriber(conn, email, now)
            if start is not None and current_subscription(conn, subscriber.id) is None:
                start_subscription(conn, subscriber.id, start, now, origin="signup")
            return subscriber

        subscriber = await self.db.write(write)
        purpose = "login" if subscriber.confirmed else "confirm"
        link = await self._send_link(subscriber, purpose, checkout_plan)
        return SignupResult(subscriber, link, checkout_plan)

    async def _send_link(self, subscriber: Subscriber, purpose: str, checkout_plan: Plan | None = None) -> str:
        text, digest = new_token(self.pepper)
        now = self.clock()
        ttl = CONFIRM_TTL if purpose == "confirm" else LOGIN_TTL
        await self.db.write(
            issue_token,
            hash=digest,
            purpose=purpose,
            email=subscriber.email,
            subscriber_id=subscriber.id,
            now=now,
            expires_at=now + ttl,
            plan_id=checkout_plan.id if checkout_plan is not None else None,
        )
        path = "/confirm" if purpose == "confirm" else "/auth"
        link = self._link(path, text)
        title = self.settings.web.title
        if purpose == "confirm":
            subject, body = (
                f"Confirm your {title} subscription",
                "Confirm your email address to start receiving alerts",
            )
        else:
            subject, body = f"Your {title} sign-in link", "Sign in to your dashboard"
        if checkout_plan is not None:
            body += f", then pay for the {checkout_plan.name} plan"
        minutes = int(ttl.total_seconds() // 60)
        await self.mailer.send(
            Email(
                to=subscriber.email,
                subject=subject,
                text=f"{body}:\n\n{link}\n\nThe link works once and expires in {minutes} minutes. "
                "If you did not ask for it, ignore this email.\n",
            )
        )
        return link

    async def request_login(self, email: str) -> str | None:
        """Email a sign-in link if the address is known; the caller says the same thing either way."""
        subscriber = await self.db.read(subscriber_by_email, email)
        if subscriber is None:
            return None
        return await self._send_link(subscriber, "login" if subscriber.confirmed else "confirm")

    async def redeem(self, token: str, purpose: str) -> str | None:
        """Use a confirmation or sign-in link: a new session token, or None if invalid/expired/used."""
        used = await self.redeem_link(token, purpose)
        return used.session if used is not None else None

    async def redeem_link(self, token: str, purpose: str) -> Redeemed | None:
        """Use a link: its session and the paid plan it leads to, or None if invalid/expired/used."""
        if not token or len(token) > 200:
            return None
        now = self.clock()
        row = await self.db.write(consume_token, self.hash(token), purpose, now)
        if row is None:
            return None
        if purpose == "admin":
            return Redeemed(await self.new_session(None, admin=True), None, None)
        if row.subscriber_id is None:
            return None
        if purpose == "confirm":
            await self.db.write(_confirm_with_email_endpoint, row.subscriber_id, row.email, now)
        return Redeemed(await self.new_session(row.subscriber_id, admin=False), row.subscriber_id, row.plan_id)

    # -- admin --------------------------------------------------------------------------

    @property
    def admin_password_enabled(self) -> bool:
        return self._admin_hash is not None

    async def admin_password_login(self, password: str) -> str | None:
        if self._admin_hash is None:
            return None
        # argon2 takes ~0.1 s of CPU by design: off the event loop
        if not await asyncio.to_thread(verify_password, self._admin_hash, password):
            return None
        return await self.new_session(None, admin=True)

    async def request_admin_link(self, email: str) -> str | None:
        admin = self.settings.admin.email
        if not admin or email.strip().lower() != admin.lower():
            return None
        text, digest = new_token(self.pepper)
        now = self.clock()
        await self.db.write(
            issue_token,
            hash=digest,
            purpose="admin",
            email=admin,
            subscriber_id=None,
            now=now,
            expires_at=now + LOGIN_TTL,
        )
        link = self._link("/admin/auth", text)
        await self.mailer.send(
            Email(to=admin, subject=f"{self.settings.web.title} admin sign-in", text=f"Sign in:\n\n{link}\n")
        )
        return link

    # -- sessions and keys ----------------------------------------------------------------

    async def new_session(self, subscriber_id: int | None, *, admin: bool) -> str:
        text, digest = new_token(self.pepper)
        now = self.clock()
        ttl = ADMIN_SESSION_TTL if admin else SESSION_TTL
        await self.db.write(
            create_session,
            hash=digest,
            subscriber_id=subscriber_id,
            admin=admin,
            now=now,
            expires_at=now + ttl,
        )
        return text

    def session(self, token: str) -> SessionRow | None:
        if not token or len(token) > 200:
            return None
        return self.db.read_sync(get_session, self.hash(token), self.clock())

    async def end_session(self, token: str) -> None:
        await self.db.write(revoke_session, self.hash(token), self.clock())

    async def create_key(self, name: str, *, subscriber_id: int | None, admin: bool = False) -> tuple[ApiKey, str]:
        """A new API key; the text is returned once and never stored."""
        issued = new_api_key(self.pepper)
        key = await self.db.write(
            create_api_key,
            prefix=issued.prefix,
            hash=issued.hash,
            name=name.strip()[:100] or "key",
            now=self.clock(),
            subscriber_id=subscriber_id,
            admin=admin,
        )
        return key, issued.text


def _confirm_with_email_endpoint(conn: Any, subscriber_id: int, email: str, now: datetime) -> None:
    """Double opt-in done: the address is confirmed and becomes the subscriber's email endpoint."""
    confirm_subscriber(conn, subscriber_id, now)
    if not any(e.channel == "email" for e in list_endpoints(conn, subscriber_id)):
        add_endpoint(conn, subscriber_id, "email", f"mailto:{email}", now)
