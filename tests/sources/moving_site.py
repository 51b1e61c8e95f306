"""A site that changes on every request, served by uvicorn in a thread (for the conformance suite,
which runs each check in its own event loop).

- ``/feed.xml``: an RSS 2.0 feed whose newest 5 items move on by one item per request (item
  ``n`` is dated ``n`` minutes after 2026-01-01T00:00Z), as a busy blog's feed does.
- ``/shop/{sku}``: a product page (JSON-LD) whose price moves on every request.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.conftest import LiveServer

START = datetime(2026, 1, 1, tzinfo=UTC)


def _app() -> Starlette:
    feed_hits = itertools.count(1)
    shop_hits = itertools.count(1)

    async def feed(request: Request) -> Response:
        n = next(feed_hits)
        items = "".join(
            f"<item><title>Post {i}</title><link>https://blog.example.com/{i}</link><guid>urn:post:{i}</guid>"
            f"<pubDate>{(START + timedelta(minutes=i)).strftime('%a, %d %b %Y %H:%M:%S GMT')}</pubDate>"
            f"<description>Post number {i}</description></item>"
            for i in range(n, max(n - 5, 0), -1)
        )
        body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>Busy</title>{items}</channel></rss>'
        return Response(body, media_type="application/rss+xml")

    async def shop(request: Request) -> Response:
        n = next(shop_hits)
        product = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": f"Kettle {request.path_params['sku']}",
            "offers": {"@type": "Offer", "price": f"{20 + n % 7}.99", "availability": "https://schema.org/InStock"},
        }
        return HTMLResponse(
            f'<html><head><script type="application/ld+json">{json.dumps(product)}</script></head>'
            f'<body><main id="desc">Kettle, revision {n}</main></body></html>'
        )

    return Starlette(routes=[Route("/feed.xml", feed), Route("/shop/{sku}", shop)])


@pytest.fixture(scope="module")
def moving_site() -> Iterator[LiveServer]:
    with LiveServer(_app()) as server:
        yield server
