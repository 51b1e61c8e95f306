"""The polite fetcher shared by ``rss`` and ``web_page``, against a real local HTTP server."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from signalmint.sources.fetch import Fetcher, Page

from .web_server import Reply, Site, VirtualTime


def fetcher(time: VirtualTime, **options: Any) -> Fetcher:
    settings: dict[str, Any] = {"host_interval": 0, "allow_private": True, "backoff": 1.0} | options
    return Fetcher(Counter(), "test", clock=time.clock, sleep=time.sleep, **settings)


def test_a_429_waits_its_retry_after_then_succeeds() -> None:
    async def main() -> tuple[Page | None, Fetcher, VirtualTime]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve("/f", Reply("slow down", status=429, headers={"Retry-After": "7"}), Reply("ok"))
            fetch = fetcher(time)
            async with fetch.session() as session:
                return await fetch.get(session, url), fetch, time

    page, fetch, time = asyncio.run(main())
    assert page is not None and page.body == b"ok"
    assert fetch.rejected == {"rate_limited": 1} and time.sleeps == [7.0]


def test_redirects_are_followed_and_the_final_url_kept() -> None:
    async def main() -> tuple[Page | None, Site]:
        time = VirtualTime()
        async with Site(time) as site:
            site.serve("/old", Reply(status=301, headers={"Location": "/new"}))
            site.serve("/new", Reply("moved here"))
            fetch = fetcher(time)
            async with fetch.session() as session:
                return await fetch.get(session, site.url("/old")), site

    page, site = asyncio.run(main())
    assert page is not None and page.body == b"moved here" and page.url == site.url("/new")
    assert [r.path for r in site.requests] == ["/old", "/new"]


def test_a_body_over_max_bytes_is_counted_and_not_retried() -> None:
    async def main() -> tuple[Page | None, Fetcher, Site]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve("/big", Reply("x" * 5000))
            fetch = fetcher(time, max_bytes=1024)
            async with fetch.session() as session:
                return await fetch.get(session, url), fetch, site

    page, fetch, site = asyncio.run(main())
    assert page is None and fetch.rejected == {"too_large": 1} and len(site.requests) == 1


def test_a_404_is_counted_and_not_retried_and_a_dead_host_is_unreachable() -> None:
    async def main() -> tuple[list[Page | None], Fetcher, Site]:
        time = VirtualTime()
        async with Site(time) as site:
            fetch = fetcher(time, retries=2)
            async with fetch.session() as session:
                missing = await fetch.get(session, site.url("/nothing"))
                dead = await fetch.get(session, "http://127.0.0.1:9/")  # the discard port: refused
            return [missing, dead], fetch, site

    pages, fetch, site = asyncio.run(main())
    assert pages == [None, None]
    assert len(site.requests) == 1
    assert fetch.rejected == {"http_error": 1, "unreachable": 3}  # the dead host: tried 1 + 2 retries


def test_a_name_that_does_not_resolve_is_unreachable_not_fatal() -> None:
    async def main() -> Fetcher:
        time = VirtualTime()

        async def resolver(host: str) -> list[str]:
            return []  # no answer

        fetch = fetcher(time, allow_private=False, resolver=resolver, retries=0)
        async with fetch.session() as session:
            assert await fetch.get(session, "https://shop.example.com/p/1") is None
        return fetch

    fetch = asyncio.run(main())
    assert fetch.rejected == {"unreachable": 1}
