"""Who is asking: an API key, a session cookie, or the public; and what they may see.

``get_viewer`` resolves ``Authorization: Bearer <key>`` first, then the session
cookie, else the public. A malformed, unknown or revoked key is a 401, never a
silent fall back to the public view. Subscriber viewers carry one
:class:`~signalmint.access.Grant` per automation; the public carries the
public grants (longest delay, the free plan's mask); an admin sees all.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import HTTPException, Request

from ..access import Grant, grants, public_grant
from ..accounts.credentials import check_csrf, csrf_token, parse_api_key, verify_token
from ..records import ApiKey, Plan, Subscriber, Subscription
from ..store import Connection, Database
from ..store.accounts import current_subscription, get_subscriber, get_watchlist
from ..store.auth import SessionRow, find_api_key
from ..store.plans import load_plans

__all__ = ["SESSION_COOKIE", "AccessBook", "Viewer", "ViewerCache", "ViewerSource", "resolve_viewer"]

SESSION_COOKIE = "sm_session"
CACHE_SECONDS = 2.0

#: What a subscriber holds, as last read: the subscriber, their current subscription, their watchlist.
SubscriberState = tuple[Subscriber | None, Subscription | None, frozenset[str]]


@dataclass
class AccessBook:
    """Every plan version, and the public grant of each automation (rebuilt when plans change)."""

    plans: dict[tuple[str, int], Plan] = field(default_factory=dict)
    public: dict[str, Grant] = field(default_factory=dict)
    current_ids: set[tuple[str, int]] = field(default_factory=set)

    @classmethod
    def load(cls, conn: Connection, automations: list[str]) -> AccessBook:
        plans = load_plans(conn)
        current = list(load_plans(conn, current_only=True).values())
        return cls(plans=plans, current_ids={(p.id, p.version) for p in current})

    def public_for(self, automation: str) -> Grant:
        """The public grant of an automation (an automation no plan covers is open to all)."""
        grant = self.public.get(automation)
        if grant is None:
            plans = [p.expanded([automation]) for p in self.current()]
            grant = self.public[automation] = public_grant(plans, automation)
        return grant

    def current(self) -> list[Plan]:
        """The plans on sale now, cheapest first."""
        plans = [self.plans[k] for k in self.current_ids if k in self.plans]
        return sorted(plans, key=lambda p: (p.price, p.id))


@dataclass(frozen=True, slots=True)
class Viewer:
    """The caller of a request and what they may see."""

    kind: str = "public"  # public | subscriber | admin
    grants: Mapping[str, Grant] = field(default_factory=dict)
    subscriber: Subscriber | None = None
    subscription: Subscription | None = None
    plan: Plan | None = None
    watchlist: frozenset[str] = frozenset()
    api_key: ApiKey | None = None
    session: str | None = None  # the session token, for CSRF checks
    book: AccessBook | None = None  # set for the public: grants come from the plans on sale
    signature: tuple[Any, ...] = ()  # equal signatures see exactly the same signals (page cache key)

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def grant(self, automation: str) -> Grant | None:
        """The grant for one automation; None means nothing of it is visible. Admins see all."""
        if self.is_admin:
            return _OPEN
        if self.book is not None:
            return self.book.public_for(automation)
        return self.grants.get(automation)

    def csrf(self, pepper: bytes) -> str:
        return csrf_token(self.session, pepper) if self.session else ""

    def check_csrf(self, submitted: str | None, pepper: bytes) -> bool:
        return bool(self.session) and check_csrf(self.session or "", submitted or "", pepper)


_OPEN = public_grant([], None)


class ViewerCache:
    """Short-lived caches of key lookups and subscribers' access; writes through the app evict at once.

    Across processes (several web replicas) a change reaches the others within ``CACHE_SECONDS``;
    on PostgreSQL at once: ``announce`` (set by the LISTEN connection, :mod:`signalmint.web.listener`)
    tells every replica, whose listener calls :meth:`drop`.
    """

    def __init__(self) -> None:
        self.keys: dict[str, tuple[float, ApiKey, str]] = {}
        self.subscribers: dict[int, tuple[float, SubscriberState]] = {}
        self.built: dict[tuple[int, int | None, str | None], tuple[float, Viewer]] = {}
        self.verified: dict[str, str] = {}
        self.announce: Callable[[str], None] | None = None

    def forget_key(self, prefix: str) -> None:
        self.drop(f"key:{prefix}")
        if self.announce is not None:
            self.announce(f"key:{prefix}")

    def forget_subscriber(self, subscriber_id: int) -> None:
        self.drop(f"sub:{subscriber_id}")
        if self.announce is not None:
            self.announce(f"sub:{subscriber_id}")

    def clear(self) -> None:
        self.drop("all")
        if self.announce is not None:
            self.announce("all")

    def drop(self, what: str) -> None:
        """Forget, in this process only, ``key:<prefix>``, ``sub:<id>`` or ``all``."""
        kind, _, name = what.partition(":")
        if kind == "key":
            self.keys.pop(name, None)
            self.verified.pop(name, None)
        elif kind == "sub" and name.isdigit():
            subscriber_id = int(name)
            self.subscribers.pop(subscriber_id, None)
            for key in [k for k in self.built if k[0] == subscriber_id]:
                self.built.pop(key, None)
        elif kind == "all":
            self.keys.clear()
            self.verified.clear()
            self.subscribers.clear()
            self.built.clear()


class _Sessions(Protocol):
    def session(self, token: str) -> SessionRow | None: ...


class ViewerSource(Protocol):
    """What resolving a viewer needs of the app (:class:`~signalmint.web.context.AppContext` has it)."""

    @property
    def viewers(self) -> ViewerCache: ...
    @property
    def db(self) -> Database: ...
    @property
    def access(self) -> AccessBook: ...
    @property
    def accounts(self) -> _Sessions: ...
    @property
    def pepper(self) -> bytes: ...
    def automation_names(self) -> list[str]: ...
    def key_used(self, key_id: int) -> None: ...


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="signalmint"'})


def _subscriber_state(ctx: ViewerSource, subscriber_id: int) -> SubscriberState:
    cached = ctx.viewers.subscribers.get(subscriber_id)
    now = time.monotonic()
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1]

    def read(conn: Connection) -> SubscriberState:
        return (
            get_subscriber(conn, subscriber_id),
            current_subscription(conn, subscriber_id),
            get_watchlist(conn, subscriber_id),
        )

    state = ctx.db.read_sync(read)
    ctx.viewers.subscribers[subscriber_id] = (now, state)
    return state


def subscriber_viewer(ctx: ViewerSource, subscriber_id: int, **extra: Any) -> Viewer:
    key = extra.get("api_key")
    cache_key = (subscriber_id, key.id if key is not None else None, extra.get("session"))
    now = time.monotonic()
    cached: tuple[float, Viewer] | None = ctx.viewers.built.get(cache_key)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    viewer = _build_subscriber_viewer(ctx, subscriber_id, **extra)
    if len(ctx.viewers.built) > 50_000:
        ctx.viewers.built.clear()
    ctx.viewers.built[cache_key] = (now, viewer)
    return viewer


def _signature(grants_: Mapping[str, Grant]) -> tuple[Any, ...]:
    return tuple(
        (name, tuple((t.delay, t.keys, t.masked, t.reveal_after) for t in grant.tiers))
        for name, grant in sorted(grants_.items())
    )


def _build_subscriber_viewer(ctx: ViewerSource, subscriber_id: int, **extra: Any) -> Viewer:
    subscriber, subscription, watchlist = _subscriber_state(ctx, subscriber_id)
    if subscriber is None:
        raise _unauthorized("this account no longer exists")
    plan = ctx.access.plans.get((subscription.plan_id, subscription.plan_version)) if subscription else None
    held = [(subscription, plan.expanded(ctx.automation_names()))] if subscription and plan else []
    granted = grants(held, subscriber, watchlist, datetime.now(UTC))
    return Viewer(
        kind="subscriber",
        grants=granted,
        signature=("subscriber", _signature(granted)),
        subscriber=subscriber,
        subscription=subscription,
        plan=plan,
        watchlist=watchlist,
        **extra,
    )


def public_viewer(ctx: ViewerSource) -> Viewer:
    return Viewer(kind="public", book=ctx.access, signature=("public", id(ctx.access)))


def _key_viewer(ctx: ViewerSource, token: str) -> Viewer:
    parsed = parse_api_key(token)
    if parsed is None:
        raise _unauthorized("that is not a signalmint API key (they look like sm_xxxxxxxx_...)")
    prefix, text = parsed
    now = time.monotonic()
    cached = ctx.viewers.keys.get(prefix)
    if cached and now - cached[0] < CACHE_SECONDS:
        key, stored = cached[1], cached[2]
    else:
        found = ctx.db.read_sync(find_api_key, prefix)
        if found is None:
            raise _unauthorized("unknown API key")
        key, stored = found
        ctx.viewers.keys[prefix] = (now, key, stored)
    verified = ctx.viewers.verified.get(prefix)
    if verified is None or not hmac.compare_digest(verified, text):
        if not verify_token(text, stored, ctx.pepper):
            raise _unauthorized("unknown API key")
        ctx.viewers.verified[prefix] = text  # in memory only: the next request skips the HMAC
    if key.revoked_at is not None:
        raise _unauthorized("this API key was revoked")
    ctx.key_used(key.id)
    if key.admin:
        return Viewer(kind="admin", api_key=key, signature=("admin",))
    if key.subscriber_id is None:
        raise _unauthorized("unknown API key")
    return subscriber_viewer(ctx, key.subscriber_id, api_key=key)


def resolve_viewer(request: Request) -> Viewer:
    """The viewer of this request (cached on the request)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})  # what request.state holds
    cached: Viewer | None = state.get("viewer")
    if cached is not None:
        return cached
    ctx: ViewerSource = request.app.state.ctx
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("use Authorization: Bearer <your API key>")
        viewer = _key_viewer(ctx, token.strip())
    else:
        viewer = public_viewer(ctx)
        session_token = request.cookies.get(SESSION_COOKIE)
        if session_token:
            row = ctx.accounts.session(session_token)
            if row is not None and row.admin:
                viewer = Viewer(kind="admin", session=session_token, signature=("admin",))
            elif row is not None and row.subscriber_id is not None:
                viewer = subscriber_viewer(ctx, row.subscriber_id, session=session_token)
    state["viewer"] = viewer
    return viewer
