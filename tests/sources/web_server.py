"""A real local HTTP server (aiohttp, in the test's event loop) serving scripted replies, and
virtual time for the polling sources (``rss``, ``web_page``).

Each path serves its replies in turn (the last one repeats). A reply with an ``etag`` or
``last_modified`` answers 304 when the request's conditional headers match it. Every request
is recorded with its headers and the virtual time it arrived at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from signalmint.records import Frame


@dataclass
class Reply:
    body: str | bytes = ""
    status: int = 200
    content_type: str = "application/xml"
    etag: str | None = None
    last_modified: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    at: float


class VirtualTime:
    """An injectable clock and sleep: sleeping advances the clock at once.

    Once ``stop()`` is true at a sleep, that sleep never returns and ``stopped`` is set: the
    test then cancels the stream.
    """

    def __init__(self, start: float = 1_767_312_000.0) -> None:  # 2026-01-02T00:00Z
        self.now = start
        self.sleeps: list[float] = []
        self.stop: Callable[[], bool] = lambda: False
        self.stopped = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.stop():
            self.stopped.set()
            await asyncio.Event().wait()
        self.now += seconds
        await asyncio.sleep(0)


class Site:
    """Scripted pages on 127.0.0.1; ``url(path)`` is the address of a path."""

    def __init__(self, time: VirtualTime | None = None) -> None:
        self.pages: dict[str, list[Reply]] = {}
        self.requests: list[Seen] = []
        self.time = time
        self.base = ""
        self._runner: web.AppRunner | None = None

    def serve(self, path: str, *replies: Reply) -> str:
        self.pages[path] = list(replies)
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.headers), self.time.now if self.time else 0.0))
        queue = self.pages.get(request.path)
        if not queue:
            return web.Response(status=404, text="no such page")
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        headers = dict(reply.headers)
        if reply.etag:
            headers["ETag"] = reply.etag
        if reply.last_modified:
            headers["Last-Modified"] = reply.last_modified
        if reply.status == 200 and (
            (reply.etag and request.headers.get("If-None-Match") == reply.etag)
            or (reply.last_modified and request.headers.get("If-Modified-Since") == reply.last_modified)
        ):
            return web.Response(status=304, headers=headers)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=body, headers=headers, content_type=reply.content_type)

    async def __aenter__(self) -> Site:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def run_until(
    source: Any, time: VirtualTime, stop: Callable[[list[Frame]], bool], since: Any = None
) -> list[Frame]:
    """The frames ``source`` streams until ``stop(frames)`` holds at one of its sleeps."""
    frames: list[Frame] = []
    time.stop = lambda: stop(frames)

    async def consume(stream: AsyncIterator[Frame]) -> None:
        async for frame in stream:
            frames.append(frame)

    task = asyncio.create_task(consume(source.stream(since)))
    stopped = asyncio.create_task(time.stopped.wait())
    done, _ = await asyncio.wait([task, stopped], timeout=10, return_when="FIRST_COMPLETED")
    if task in done:
        task.result()  # the stream ended or raised: surface it
    for pending in (task, stopped):
        pending.cancel()
    await asyncio.gather(task, stopped, return_exceptions=True)
    assert time.stopped.is_set(), "the stream did not reach the stop condition in 10 s"
    return frames
