"""One ``LISTEN`` connection per web process on PostgreSQL: live streams on every replica.

The engine's commit announces its signals (:func:`signalmint.store.notify.notify_signals`);
the listener hears it and publishes to the process's :class:`~signalmint.engine.hub.SignalHub`, so
every SSE stream on this replica wakes as soon as the signal may be shown (once it has
settled, :data:`~signalmint.web.visibility.SETTLE` after its commit), whichever host committed. Cache messages
(``sub:7``, ``key:ab12``, ``plans``, ``all``) go to ``on_cache``.

When the connection is lost (a PostgreSQL restart, the network, ``pg_terminate_backend``),
the hub stops claiming to be live (streams fall back to polling), and the listener
reconnects with exponential backoff. Once listening again it wakes every stream, which
re-reads the store from its own last id, and drops every cache (invalidations sent while
it was away were missed): nothing is lost, because the store, not the notification, is the
record. A connection that stays silent is checked with ``SELECT 1`` every ``ping_every``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from ..engine.hub import SignalHub
from ..store import Database
from ..store.listen import connect_listener, ping_listener
from ..store.notify import backoff_delay, notify_cache
from .visibility import SETTLE

__all__ = ["Listener", "backoff_delay"]

log = logging.getLogger("signalmint.web")


class Listener:
    """Keeps one LISTEN connection open while :meth:`run` runs; :meth:`announce` sends cache messages."""

    def __init__(
        self,
        db: Database,
        hub: SignalHub,
        on_cache: Callable[[str], None] | None = None,
        *,
        ping_every: float = 15.0,
    ) -> None:
        self.db = db
        self.hub = hub
        self.on_cache = on_cache
        self.ping_every = ping_every
        self.connects = 0  # successful connections so far (1 + reconnects)
        self.connected = asyncio.Event()
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def announce(self, payload: str) -> None:
        """Ask every replica (this one too) to drop its cache of ``payload``; any thread may call it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not listening (yet, or any more): the others' cache lifetimes still bound it
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._outgoing.put_nowait, payload)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after every loss."""
        self._loop = asyncio.get_running_loop()
        sender = asyncio.create_task(self._send())
        failures = 0
        try:
            while True:
                try:
                    await self._listen()
                    failures = 0
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    if self.connected.is_set() or failures == 0:
                        log.warning("LISTEN connection lost (%s); streams poll until it is back", reason)
                    failures += 1
                except Exception:  # a bug must not end live streams for good: log it, start over
                    log.exception("LISTEN connection failed; streams poll until it is back")
                    failures += 1
                finally:
                    self.hub.live = False
                    self.connected.clear()
                    self.hub.wake()  # streams waiting on a long timeout start polling now
                await asyncio.sleep(backoff_delay(failures))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _listen(self) -> None:
        conn, signals_channel, cache_channel = await connect_listener(self.db.engine)
        async with conn:
            self.connects += 1
            if self.connects > 1:
                log.info("LISTEN connection back; waking every stream")
                self._cache("all")  # invalidations sent while we were away were missed
            self.hub.live = True
            self.connected.set()
            self.hub.wake()  # streams re-read from their last id: whatever committed meanwhile shows now
            while True:
                async for note in conn.notifies(timeout=self.ping_every):
                    if note.channel == signals_channel:
                        self._signal(note.payload)
                    elif note.channel == cache_channel:
                        self._cache(note.payload)
                await asyncio.wait_for(ping_listener(conn), timeout=5)

    def _signal(self, payload: str) -> None:
        _, _, last = payload.rpartition(":")
        try:
            # Streams show a signal once it has settled: wake them then (and a little after, for
            # the clocks of two hosts), not now, when there would be nothing new to read.
            self.hub.publish_later(int(last), SETTLE.total_seconds() + 0.05)
        except ValueError:
            log.warning("ignoring a signal notification that names no id: %r", payload[:80])
            self.hub.wake()

    def _cache(self, payload: str) -> None:
        if self.on_cache is None:
            return
        try:
            self.on_cache(payload)
        except Exception:
            log.exception("dropping caches for %r failed", payload[:80])

    async def _send(self) -> None:
        while True:
            payload = await self._outgoing.get()
            try:
                await self.db.write(notify_cache, payload)
            except Exception:  # the TTL of each cache still bounds how stale a replica can be
                log.warning("could not announce a cache change (%s); other replicas see it within seconds", payload)
