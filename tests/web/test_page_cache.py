"""AppContext.page: response bodies cached for one second, and only for the current one."""

from __future__ import annotations

import asyncio
from typing import Any

from signalmint.web.context import AppContext


def context() -> AppContext:
    none: Any = None
    return AppContext(none, none, none, none, none, none, b"", none)


def test_pages_of_earlier_seconds_are_dropped_when_a_later_second_asks() -> None:
    ctx = context()
    made: list[tuple[Any, ...]] = []

    def maker(key: tuple[Any, ...]) -> Any:
        async def make() -> bytes:
            made.append(key)
            return repr(key).encode()

        return make

    async def scenario() -> None:
        for second in (100, 101, 102):
            for page in range(50):  # polls of one second: each page made once, then served cached
                key = ("viewer", page, second)
                for _ in range(3):
                    assert await ctx.page(key, maker(key), second=second) == repr(key).encode()
            assert len(ctx.pages) == 50  # only this second's pages are kept
            assert {k[2] for k in ctx.pages} == {second}
        late = ("viewer", 0, 101)  # a request that read the clock before the second turned
        assert await ctx.page(late, maker(late), second=101) == repr(late).encode()
        assert late in ctx.pages and len(ctx.pages) == 51  # kept until a later second asks
        key = ("viewer", 0, 103)
        await ctx.page(key, maker(key), second=103)
        assert list(ctx.pages) == [key]

    asyncio.run(scenario())
    assert len(made) == 3 * 50 + 2  # never made twice within its second


def test_concurrent_misses_of_one_page_make_it_once_even_as_the_second_turns() -> None:
    ctx = context()
    calls = 0
    gate = asyncio.Event()

    async def slow() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"page"

    async def scenario() -> list[bytes]:
        waiting = [asyncio.create_task(ctx.page(("v", 1), slow, second=7)) for _ in range(5)]
        await asyncio.sleep(0)
        await ctx.page(("v", 2), lambda: _ready(b"next"), second=8)  # a later second: the pending page stays
        gate.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(scenario()) == [b"page"] * 5
    assert calls == 1


async def _ready(body: bytes) -> bytes:
    return body
