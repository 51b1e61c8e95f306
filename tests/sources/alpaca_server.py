"""A local stand-in for Alpaca's market data: REST bars and the websocket stream, real wire formats.

REST: ``GET /v2/stocks/bars`` with the ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY``
headers, ``symbols``, ``timeframe``, ``start``/``end`` (RFC 3339, inclusive),
``limit`` and ``page_token``; it answers
``{"bars": {"AAPL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}]}, "next_page_token": ...}``
sorted by symbol then time, at most ``page_size`` bars a page, as Alpaca does.

Websocket: ``[{"T": "success", "msg": "connected"}]`` on connect, the ``auth``
action answered ``authenticated`` (or an error), ``subscribe`` answered with a
``subscription`` message, then every batch of ``stream`` as bar messages
(``{"T": "b", "S": ..., "t": ...}``). Frames are msgpack (with Timestamp
``t``) when the client sends ``Content-Type: application/msgpack``, as
alpaca-py does, else JSON text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.server import ServerConnection, serve

KEY, SECRET = "PKTEST123", "secret-test-456"


def bar(symbol: str, at: datetime, volume: float = 1000.0, price: float = 100.0, **override: Any) -> dict[str, Any]:
    """One bar in Alpaca's REST shape (``t`` as RFC 3339 text with Z)."""
    row: dict[str, Any] = {
        "t": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": price,
        "h": price + 1,
        "l": price - 1,
        "c": price + 0.5,
        "v": volume,
        "n": 12,
        "vw": price + 0.2,
        "S": symbol,
    }
    row.update(override)
    return row


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


class AlpacaServer:
    """REST and websocket servers on 127.0.0.1, each in its own thread."""

    def __init__(self, page_size: int = 1000) -> None:
        self.tape: list[dict[str, Any]] = []  # bars the REST API knows (each with "S")
        self.stream: list[list[dict[str, Any]]] = []  # batches sent after each subscription
        self.page_size = page_size
        self.requests: list[dict[str, str]] = []
        self.ws_log: list[dict[str, Any]] = []  # what websocket clients sent
        self.ws_content_types: list[str | None] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.ws_port = 0

    @property
    def data_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v2/iex"

    # -- REST ------------------------------------------------------------------

    def _bars_page(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if query.get("timeframe") != "1Min":
            return 422, {"code": 42210000, "message": f"invalid timeframe {query.get('timeframe')}"}
        symbols = set(query.get("symbols", "").split(","))
        start = _parse(query["start"]) if "start" in query else datetime.min.replace(tzinfo=UTC)
        end = _parse(query["end"]) if "end" in query else datetime.max.replace(tzinfo=UTC)
        rows = sorted(
            (b for b in self.tape if b["S"] in symbols and start <= _parse(b["t"].replace("Z", "+00:00")) <= end),
            key=lambda b: (b["S"], b["t"]),
        )
        offset = int(base64.b64decode(query["page_token"])) if query.get("page_token") else 0
        size = min(int(query.get("limit") or 1000), self.page_size)
        page = rows[offset : offset + size]
        more = offset + size < len(rows)
        out: dict[str, list[dict[str, Any]]] = {}
        for b in page:
            out.setdefault(b["S"], []).append({k: v for k, v in b.items() if k != "S"})
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return 200, {"bars": out, "next_page_token": token}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                server.requests.append({"path": url.path, **query})
                if self.headers.get("APCA-API-KEY-ID") != KEY or self.headers.get("APCA-API-SECRET-KEY") != SECRET:
                    status, body = 401, {"code": 40110000, "message": "request is not authorized"}
                elif url.path != "/v2/stocks/bars":
                    status, body = 404, {"code": 40410000, "message": "endpoint not found"}
                else:
                    status, body = server._bars_page(query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    # -- websocket -------------------------------------------------------------

    async def _session(self, ws: ServerConnection) -> None:
        content_type = ws.request.headers.get("Content-Type") if ws.request else None
        self.ws_content_types.append(content_type)
        packed = content_type == "application/msgpack"

        async def send(messages: list[dict[str, Any]]) -> None:
            if packed:
                for m in (m for m in messages if "t" in m):
                    with contextlib.suppress(AttributeError, ValueError):  # a bad "t" goes out as it is
                        ns = int(_parse(m["t"].replace("Z", "+00:00")).timestamp()) * 10**9
                        m["t"] = msgpack.Timestamp.from_unix_nano(ns)
                await ws.send(msgpack.packb(messages))
            else:
                await ws.send(json.dumps(messages))

        async def recv() -> dict[str, Any]:
            raw = await ws.recv()
            msg: dict[str, Any] = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
            self.ws_log.append(msg)
            return msg

        await send([{"T": "success", "msg": "connected"}])
        auth = await recv()
        if auth.get("action") != "auth" or (auth.get("key"), auth.get("secret")) != (KEY, SECRET):
            await send([{"T": "error", "code": 402, "msg": "auth failed"}])
            await ws.close()
            return
        await send([{"T": "success", "msg": "authenticated"}])
        sub = await recv()
        bars = list(sub.get("bars", []))
        await send([{"T": "subscription", "trades": [], "quotes": [], "bars": bars}])
        for batch in self.stream:
            await send([{"T": "b", **b} for b in batch])
        await ws.wait_closed()

    def _run_ws(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            async with serve(self._session, "127.0.0.1", 0) as ws_server:
                self.ws_port = next(iter(ws_server.sockets)).getsockname()[1]
                self._ready.set()
                await self._stop.wait()

        loop.run_until_complete(main())
        loop.close()

    # -- lifetime --------------------------------------------------------------

    def __enter__(self) -> AlpacaServer:
        self._threads = [
            threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True),
            threading.Thread(target=self._run_ws, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        for thread in self._threads:
            thread.join(10)


def minutes(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=i) for i in range(count)]


@pytest.fixture
def alpaca_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlpacaServer]:
    """A running stand-in, with the keys it accepts in the environment."""
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    with AlpacaServer() as server:
        yield server


def conformance_tape(server: AlpacaServer, symbols: list[str], count: int = 60) -> None:
    """The last ``count`` minutes before the real clock's minute on REST, the next ``count`` on the stream."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    server.tape = [
        bar(s, t, volume=1000 + i)
        for i, t in enumerate(minutes(now - timedelta(minutes=count), count))
        for s in symbols
    ]
    server.stream = [[bar(s, t) for s in symbols] for t in minutes(now, count)]
