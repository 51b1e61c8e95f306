"""The websocket half of the ``ccxt`` source: ccxt.pro's kline stream, closed candles only.

ccxt.pro parses a kline event into ``[open time, o, h, l, c, v]`` and drops Binance's
``k.x`` (is this kline closed?), and a ``watch_*`` call returns one update at a time
(updates that arrive while nobody waits only reach its cache). So the feed takes every
kline event itself, from the exchange's ``handle_ohlcv``, into an inbox the source drains:

- a candle of a symbol is closed when the exchange says so (``x``) or when a later
  candle of that symbol arrives on the same connection (events are ordered);
- it becomes a bar only if it continues what the source already holds for that symbol
  (``answered``): a duplicate of a candle the REST backfill already fetched is ignored, and
  after a gap (the stream started late, a reconnect) the missing candles come over REST,
  which the source asks for once a close has passed by ``delay`` without the stream
  delivering it: the same guarantees as polling, no gap and no duplicate at the seam;
- a dropped connection is reconnected with the source's backoff; events of the old
  connection are forgotten (``epoch``), so a candle is never judged closed across a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["KlineFeed"]

Row = tuple[float, float, float, float, float]


class KlineFeed:
    """Subscribes ``symbols`` on ccxt.pro exchange ``ex`` and collects their kline events."""

    def __init__(
        self,
        ex: Any,
        symbols: list[str],
        timeframe: str,
        timeframe_ms: int,
        *,
        failed: Callable[[Any, str, BaseException], float],
        sleep: Callable[[float], Awaitable[None]],
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.ex, self.timeframe, self.tf = ex, timeframe, timeframe_ms
        self.failed, self.sleep, self.backoff, self.max_backoff = failed, sleep, backoff, max_backoff
        self.wake = asyncio.Event()
        self.epoch = 0  # bumped on every lost connection
        self.connections = 0
        self._inbox: list[tuple[Any, Any, Any, int]] = []  # (market id, open ms, kline, epoch)
        self._last: dict[str, tuple[int, Row | None, bool]] = {}  # symbol -> (open ms, row, closed)
        self._seen_epoch = 0
        self._forward = True  # let ccxt handle events too, until a subscription is confirmed
        self._task: asyncio.Task[None] | None = None
        self._ids: dict[str, str] = {}
        self.symbols: list[str] = []
        self.follow(symbols)
        original = ex.handle_ohlcv

        def handle_ohlcv(client: Any, message: Any) -> Any:
            kline = message.get("k") if isinstance(message, dict) else None
            if isinstance(kline, dict):
                self._inbox.append((kline.get("s"), kline.get("t"), kline, self.epoch))
                self.wake.set()
            return original(client, message) if self._forward else None

        ex.handle_ohlcv = handle_ohlcv

    def follow(self, symbols: list[str]) -> None:
        """(Re)subscribe to ``symbols``; events of other symbols are ignored."""
        self.symbols = list(symbols)
        self._ids = {self.ex.market(s)["id"]: s for s in symbols}
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if symbols:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        """Subscribe, then wait for the connection to fail; reconnect with backoff, forever."""
        pairs = [[s, self.timeframe] for s in self.symbols]
        failures = 0
        while True:
            try:
                self._forward = True
                await self.ex.watch_ohlcv_for_symbols(pairs)
                self._forward = False
                self.connections += 1
                failures = 0
                clients = list(self.ex.clients.values())
                # a future nobody resolves: ccxt rejects every pending future when a connection fails
                await asyncio.gather(*(client.future("signalmint:connection") for client in clients))
                raise ConnectionError("websocket closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(self.ex, "websocket", exc)
                self.epoch += 1
                self.wake.set()
                failures += 1
                await self.sleep(min(self.backoff * 2 ** (failures - 1), self.max_backoff))

    def drain(
        self, answered: dict[str, int], pending: dict[int, dict[str, Row]], cursor: int, rejected: Counter[str]
    ) -> None:
        """Turn the kline events received so far into closed candles that continue ``answered``."""
        self.wake.clear()
        inbox, self._inbox = self._inbox, []
        if self.epoch != self._seen_epoch:  # a reconnect: nothing is known to be continuous
            self._seen_epoch = self.epoch
            self._last.clear()
        for market_id, opened, kline, epoch in inbox:
            symbol = self._ids.get(market_id) if isinstance(market_id, str) else None
            if epoch != self.epoch or symbol is None or not isinstance(opened, int):
                continue
            previous = self._last.get(symbol)
            if previous is not None and previous[0] < opened and not previous[2]:
                self._close(symbol, previous[0], previous[1], answered, pending, cursor, rejected)
            row = _row(kline)
            closed = kline.get("x") is True
            if closed:
                self._close(symbol, opened, row, answered, pending, cursor, rejected)
            if previous is None or previous[0] <= opened:
                self._last[symbol] = (opened, row, closed)

    def _close(
        self,
        symbol: str,
        opened: int,
        row: Row | None,
        answered: dict[str, int],
        pending: dict[int, dict[str, Row]],
        cursor: int,
        rejected: Counter[str],
    ) -> None:
        if row is None or answered.get(symbol) != opened:  # a duplicate, or after a gap: REST has it
            return
        close = opened + self.tf
        answered[symbol] = close
        if close <= cursor:
            rejected["late"] += 1
        else:
            pending.setdefault(close, {})[symbol] = row


def _row(kline: dict[str, Any]) -> Row | None:
    try:
        return (float(kline["o"]), float(kline["h"]), float(kline["l"]), float(kline["c"]), float(kline["v"]))
    except (KeyError, TypeError, ValueError):
        return None  # unreadable: the candle comes over REST
