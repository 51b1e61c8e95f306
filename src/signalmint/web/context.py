"""What every route needs, gathered in one object on ``app.state.ctx``.

The pipeline running in the same process (``signalmint run``: the engine) comes in as a
:class:`Pipeline`, the few things the web shows or feeds of it; the web never imports the
engine. Whoever changes who gets alerts says so to the store (``db.audience_changed()``),
which the fan-out reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request

from ..access.ratelimit import TokenBucketLimiter
from ..accounts.admin import Operator
from ..accounts.mail import Mailer
from ..accounts.service import Accounts
from ..billing.service import Billing
from ..billing.usage import UsageMeter
from ..config import Settings
from ..demo.mailcatcher import MailCatcher
from ..engine.hub import SignalHub
from ..engine.metrics import Metrics
from ..store import Database, list_automations
from ..store.auth import touch_api_keys
from .auth import AccessBook, Viewer, ViewerCache, resolve_viewer
from .inspector import Inspector
from .shared_limits import Limiter

__all__ = ["AppContext", "AutomationState", "Pipeline", "Viewer", "ctx_dependency", "get_ctx", "get_viewer"]

log = logging.getLogger("signalmint.web")


class AutomationState(Protocol):
    """One running automation as ``/healthz`` and the status page show it."""

    @property
    def name(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def finished(self) -> bool: ...
    @property
    def cursor(self) -> datetime | None: ...
    @property
    def bars(self) -> int: ...
    @property
    def signals(self) -> int: ...
    @property
    def rejected(self) -> Mapping[str, int]: ...
    @property
    def restarts(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...


class Pipeline(Protocol):
    """What the web app uses of the pipeline running in its process (the engine, given to ``create_app``):
    it starts and stops with the app, shows its state, and takes pushed data for its sources."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def hub(self) -> SignalHub: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> list[dict[str, Any]]: ...
    def statuses(self) -> Sequence[AutomationState]: ...
    def source(self, name: str) -> Any | None: ...


@dataclass
class AppContext:
    settings: Settings
    db: Database
    hub: SignalHub
    metrics: Metrics
    accounts: Accounts
    mailer: Mailer
    pepper: bytes
    access: AccessBook
    engine: Pipeline | None = None  # the pipeline of this process, if it runs one here
    viewers: ViewerCache = field(default_factory=ViewerCache)
    limiter: Limiter = field(default_factory=TokenBucketLimiter)
    meter: UsageMeter | None = None
    billing: Billing | None = None
    catcher: MailCatcher | None = None  # demo mode: the local SMTP server the demo's email goes to
    inspector: Inspector | None = None  # demo mode: what webhooks sent to /demo/inspect/{token}
    _used_keys: dict[int, datetime] = field(default_factory=dict)
    _names: tuple[float, list[str]] = (-1e9, [])
    pages: dict[tuple[Any, ...], asyncio.Future[bytes]] = field(default_factory=dict)
    _pages_second = 0  # the second the cached pages are for
    live_streams: dict[int, int] = field(default_factory=dict)  # subscriber id -> open /api/v1/stream answers

    async def page(self, key: tuple[Any, ...], make: Callable[[], Awaitable[bytes]], *, second: int) -> bytes:
        """A response body cached for ``second`` (a Unix time): concurrent misses of one key wait
        for a single ``make()``. The first page asked for a later second drops the pages made
        for earlier ones (those still being made stay for their waiters): a cache that kept them
        grew by every page polled, tens of KB each, until it held 20,000."""
        if second > self._pages_second:
            self._pages_second = second
            self.pages = {k: f for k, f in self.pages.items() if not f.done()}
        found = self.pages.get(key)
        if found is not None and found.done():
            return found.result()
        if found is None:
            if len(self.pages) > 20_000:  # within one second
                self.pages = {k: f for k, f in self.pages.items() if not f.done()}
            found = self.pages[key] = asyncio.get_running_loop().create_future()
            try:
                found.set_result(await make())
            except BaseException as exc:
                self.pages.pop(key, None)
                found.set_exception(exc)
                found.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
                raise
        return await asyncio.shield(found)

    @property
    def operator(self) -> Operator:
        return Operator(self.db, self.access.current, self.viewers.forget_subscriber)

    def key_used(self, key_id: int) -> None:
        self._used_keys[key_id] = datetime.now(UTC)

    def automation_names(self) -> list[str]:
        """Every automation in the store (cached for a few seconds; they change rarely)."""
        at, names = self._names
        if time.monotonic() - at > 5.0:
            names = [a.name for a in self.db.read_sync(list_automations, enabled_only=False)]
            self._names = (time.monotonic(), names)
        return names

    def reload_access(self) -> None:
        names = [a.name for a in self.settings.automations]
        self.access = self.db.read_sync(AccessBook.load, names)
        self.viewers.clear()

    def cache_message(self, what: str) -> None:
        """Another replica (or this one) changed what ``what`` names: drop it here (the LISTEN
        connection's cache channel). ``plans`` and ``all`` reload the plans as well."""
        if what in {"plans", "all"}:
            names = [a.name for a in self.settings.automations]
            self.access = self.db.read_sync(AccessBook.load, names)
            self.viewers.drop("all")
        else:
            self.viewers.drop(what)

    async def housekeeping(self, every: float = 1.0) -> None:
        """Flush API usage and key last-used times every second (and once more when stopping)."""
        try:
            while True:
                await asyncio.sleep(every)
                await self._flush()
        finally:
            with contextlib.suppress(Exception):
                await self._flush()

    async def _flush(self) -> None:
        if self.meter is not None:
            await self.meter.flush()
        if self._used_keys:
            used, self._used_keys = self._used_keys, {}
            await self.db.write(touch_api_keys, used)


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def ctx_dependency(request: Request) -> AppContext:
    """``get_ctx`` for ``Depends`` in async routes (a sync dependency would cost a thread hop)."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_viewer(request: Request) -> Viewer:
    return resolve_viewer(request)
