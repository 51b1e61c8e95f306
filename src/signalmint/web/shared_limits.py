"""Rate limits and throttles shared by every web replica (``web.shared_limits``).

One process keeps its token buckets in memory (:class:`~signalmint.access.ratelimit.TokenBucketLimiter`).
Several web replicas behind a load balancer must share them, or a client gets N times its
allowance by spreading requests (and a password guesser N times the login tries). Two
shared backends give the same answers as the memory one (same :class:`RateDecision`):

- :class:`PostgresLimiter`: one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on an
  UNLOGGED table per check (:mod:`signalmint.store.limits`), over a few async connections of
  its own. Nothing more to run; the default on PostgreSQL.
- :class:`RedisLimiter`: the same bucket in a Lua script (one round trip), for deployments
  that already run Redis. ``bench/ratelimit_shared.py`` measures both.

Both use their server's clock, so hosts whose clocks differ still refill buckets alike.
Route code calls ``await limiter.acheck(...)`` on the event loop; ``check`` (blocking) is for
code already on a worker thread and for rare checks such as sign-in throttles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ..access.ratelimit import _EPSILON, RateDecision, TokenBucketLimiter
from ..errors import ConfigError
from ..store import Database
from ..store.limits import PRUNE, TAKE, take_params, take_tokens

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Limiter", "PostgresLimiter", "RedisLimiter", "make_limiter"]

log = logging.getLogger("signalmint.web")

PRUNE_EVERY = 60.0


class Limiter(Protocol):
    def check(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision: ...

    async def acheck(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision: ...

    async def astart(self) -> None: ...

    async def aclose(self) -> None: ...


def _validate(rate: float, burst: int, cost: float) -> None:
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number of tokens per second, not {rate}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst}")
    if not 0 <= cost <= burst:
        raise ValueError(f"cost must be between 0 and burst ({burst}), not {cost}")


def _decision(tokens: float, allowed: bool, rate: float, burst: int, cost: float) -> RateDecision:
    return RateDecision(
        allowed=allowed,
        limit=burst,
        remaining=math.floor(tokens + _EPSILON),
        reset=(burst - tokens) / rate,
        retry_after=None if allowed else (cost - tokens) / rate,
        rate=rate,
    )


class PostgresLimiter:
    """Token buckets in PostgreSQL's ``rate_buckets`` table, over ``connections`` async connections."""

    def __init__(self, db: Database, *, connections: int = 4) -> None:
        self.db = db
        self.size = connections
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] | None = None
        self._opened = 0
        self._pruned = time.monotonic()
        self._started = False

    def __repr__(self) -> str:
        return f"PostgresLimiter({self.db.safe_url!r}, connections={self.size})"

    def check(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        _validate(rate, burst, cost)
        with self.db.engine.begin() as conn:
            tokens, allowed = take_tokens(conn, str(key), rate, burst, cost)
        return _decision(tokens, allowed, rate, burst, cost)

    async def astart(self) -> None:
        """From now until :meth:`aclose`, checks on this event loop use the limiter's own async
        connections (an app serving without its lifespan, as some tests do, checks on a thread)."""
        self._started = True

    async def acheck(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        if not self._started:
            return await asyncio.to_thread(self.check, key, rate, burst, cost)
        _validate(rate, burst, cost)
        async with self._connection() as conn:
            row = await (await conn.execute(TAKE, take_params(str(key), rate, burst, cost))).fetchone()
            assert row is not None  # RETURNING on an upsert always returns the row
            if time.monotonic() - self._pruned > PRUNE_EVERY:
                self._pruned = time.monotonic()
                await conn.execute(PRUNE)
        return _decision(float(row[0]), bool(row[1]), rate, burst, cost)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._idle is None:
            self._idle = asyncio.Queue()
        if self._idle.empty() and self._opened < self.size:
            self._opened += 1
            try:
                args, kwargs = self.db.engine.dialect.create_connect_args(self.db.engine.url)
                conn = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
            except BaseException:
                self._opened -= 1
                raise
        else:
            conn = await self._idle.get()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            if healthy and not conn.closed:
                self._idle.put_nowait(conn)
            else:  # a broken connection is dropped; the next check opens a new one
                self._opened -= 1
                with contextlib.suppress(Exception):
                    await conn.close()

    async def aclose(self) -> None:
        self._started = False
        while self._idle is not None and not self._idle.empty():
            conn = self._idle.get_nowait()
            self._opened -= 1
            with contextlib.suppress(Exception):
                await conn.close()


# KEYS[1] the bucket; ARGV rate, burst, cost. Redis's own clock; the reply's tokens as a string
# (a Lua number would come back truncated to an integer).
_LUA = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = burst, now end
if now > at then tokens, at = math.min(burst, tokens + (now - at) * rate), now
else tokens = math.min(burst, tokens) end
local allowed = 0
if tokens + 1e-9 >= cost then tokens, allowed = math.max(0, tokens - cost), 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {string.format('%.17g', tokens), allowed}
"""


class RedisLimiter:
    """Token buckets in Redis (``web.redis_url``), one Lua script call per check."""

    def __init__(self, url: str, *, prefix: str = "signalmint:rl:") -> None:
        try:
            import redis
            import redis.asyncio
        except ImportError:  # pragma: no cover - the extra is installed in development
            raise ConfigError(
                "web.shared_limits is redis, but the redis client is not installed",
                key="web.shared_limits",
                hint="pip install 'signalmint[redis]', or choose postgres",
            ) from None
        self.url = url
        self.prefix = prefix
        self._sync = redis.Redis.from_url(url)
        self._async = redis.asyncio.Redis.from_url(url)
        self._script = self._async.register_script(_LUA)
        self._sync_script = self._sync.register_script(_LUA)

    def __repr__(self) -> str:
        return f"RedisLimiter(prefix={self.prefix!r})"

    def check(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        _validate(rate, burst, cost)
        tokens, allowed = self._sync_script(keys=[f"{self.prefix}{key}"], args=[rate, burst, cost])
        return _decision(float(tokens), bool(allowed), rate, burst, cost)

    async def acheck(self, key: str | int, rate: float, burst: int, cost: float = 1) -> RateDecision:
        _validate(rate, burst, cost)
        tokens, allowed = await self._script(keys=[f"{self.prefix}{key}"], args=[rate, burst, cost])
        return _decision(float(tokens), bool(allowed), rate, burst, cost)

    async def astart(self) -> None:
        """Nothing to open ahead: redis-py connects on first use."""

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()


def make_limiter(settings: Settings, db: Database) -> Limiter:
    """The limiter ``web.shared_limits`` asks for (``auto``: PostgreSQL's when the store is PostgreSQL)."""
    choice = settings.web.shared_limits
    if choice == "auto":
        choice = "memory" if db.engine.dialect.name == "sqlite" else "postgres"
    if choice == "postgres":
        if db.engine.dialect.name != "postgresql":
            raise ConfigError(
                "web.shared_limits is postgres, but the database is not PostgreSQL",
                key="web.shared_limits",
                hint="write memory (one process) or auto",
            )
        return PostgresLimiter(db)
    if choice == "redis":
        return RedisLimiter(settings.web.redis_url)
    return TokenBucketLimiter()
