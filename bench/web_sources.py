"""Shop pages fetched and parsed per second: the ``web_page`` source's fetcher and extractor, and a
BeautifulSoup-based peer, against the same local server.

A local aiohttp server (in its own process, so it does not share the client's event loop or GIL)
serves ``--pages`` distinct product pages of about 40 KB each, shaped like a real shop's: a long
navigation, an ``@graph`` of JSON-LD with a ``Product`` and its offers, microdata, and 200
reviews. Each variant fetches every page once with ``--concurrency`` requests in flight over
one pooled session and reads its price, availability and title:

- **signalmint**: :class:`signalmint.sources.fetch.Fetcher` (conditional GET, per-host rate
  limit set to 0, SSRF guard off for loopback) and :func:`signalmint.sources.shop.extract`
  (parsel/lxml: JSON-LD, microdata, selectors);
- **peer**: aiohttp GETs and ``BeautifulSoup(body, "html.parser")`` reading the same JSON-LD
  (the way most scraping tutorials do it); ``--peer-parser lxml`` gives BeautifulSoup lxml's
  tree builder instead.

Runs alternate between the two and repeat; pages/s are medians, the ratio is the median of
the per-run ratios (ours / the peer's).

    uv run python bench/web_sources.py [--pages 400] [--concurrency 16] [--runs 3] [--peer-parser lxml] [--port-base N]

Last line: RESULT pages_per_s=... peer_pages_per_s=... ratio=... ratio_min=... ratio_max=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from _common import Ports, add_common, describe_ratio, print_result, ratio_fields, ratios, span, wait_for_port
from bs4 import BeautifulSoup

from signalmint.sources.fetch import Fetcher
from signalmint.sources.shop import extract


def page(i: int) -> str:
    nav = "".join(f'<li class="nav-item"><a href="/c/{c}">Category {c}</a></li>' for c in range(300))
    reviews = "".join(
        f'<div class="review"><p>Review {r} of product {i}: lorem ipsum dolor sit amet.</p><span>4</span></div>'
        for r in range(200)
    )
    graph = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "Organization", "name": "Shop"},
            {
                "@type": "Product",
                "name": f"Product {i}",
                "offers": [
                    {"@type": "Offer", "price": f"{10 + i % 90}.99", "availability": "https://schema.org/InStock"},
                    {"@type": "Offer", "price": "999.00", "availability": "https://schema.org/OutOfStock"},
                ],
            },
        ],
    }
    return (
        f'<!doctype html><html><head><title>Product {i}</title><script type="application/ld+json">'
        f"{json.dumps(graph)}</script></head><body><ul>{nav}</ul>"
        f'<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Product {i}</h1>'
        f'<meta itemprop="price" content="{10 + i % 90}.99"></div>{reviews}</body></html>'
    )


def serve(port: int, pages: int) -> None:
    from aiohttp import web

    bodies = [page(i).encode() for i in range(pages)]

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=bodies[int(request.match_info["i"])], content_type="text/html")

    app = web.Application()
    app.router.add_get("/p/{i}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


PEER_PARSER = "html.parser"


def peer_extract(body: bytes) -> tuple[float | None, str | None]:
    soup = BeautifulSoup(body, PEER_PARSER)
    for script in soup.find_all("script", type="application/ld+json"):
        data = json.loads(script.string or "null")
        for node in data.get("@graph", [data]) if isinstance(data, dict) else data:
            if isinstance(node, dict) and node.get("@type") == "Product":
                offers = node.get("offers") or []
                offers = offers if isinstance(offers, list) else [offers]
                prices = [float(o["price"]) for o in offers if str(o.get("availability", "")).endswith("InStock")]
                return (min(prices) if prices else None), node.get("name")
    tag = soup.find(itemprop="price")
    return (float(str(tag.get("content"))) if tag else None), None


async def ours(urls: list[str], concurrency: int) -> int:
    fetcher = Fetcher(Counter(), "bench", host_interval=0, allow_private=True, retries=0)
    gate = asyncio.Semaphore(concurrency)
    good = 0
    async with fetcher.session() as session:

        async def one(url: str) -> None:
            nonlocal good
            async with gate:
                fetched = await fetcher.get(session, url)
                if fetched is not None and extract(fetched.body).price > 0:
                    good += 1

        await asyncio.gather(*(one(u) for u in urls))
    return good


async def peer(urls: list[str], concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    good = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=4)) as session:

        async def one(url: str) -> None:
            nonlocal good
            async with gate, session.get(url) as response:
                body = await response.read()
                price, _ = peer_extract(body)
                if price is not None and price > 0:
                    good += 1

        await asyncio.gather(*(one(u) for u in urls))
    return good


def timed(run: Callable[[list[str], int], Coroutine[Any, Any, int]], urls: list[str], concurrency: int) -> float:
    started = time.perf_counter()
    good = asyncio.run(run(urls, concurrency))
    elapsed = time.perf_counter() - started
    if good != len(urls):
        raise SystemExit(f"{run.__name__}: read a price on {good} of {len(urls)} pages")
    return len(urls) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=400, help="distinct product pages fetched per run (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument(
        "--peer-parser",
        default="html.parser",
        choices=["html.parser", "lxml"],
        help="BeautifulSoup's tree builder for the peer (default html.parser, its own; lxml is faster)",
    )
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    add_common(parser)
    args = parser.parse_args()
    global PEER_PARSER
    PEER_PARSER = args.peer_parser
    if args.serve:
        serve(args.serve, args.pages)
        return
    port = Ports(args.port_base).next()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--serve", str(port), "--pages", str(args.pages)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        urls = [f"http://127.0.0.1:{port}/p/{i}" for i in range(args.pages)]
        print(f"{args.pages} pages of {len(page(0)) // 1024} KB, {args.concurrency} in flight", flush=True)
        timed(ours, urls[:20], args.concurrency)  # warm both paths (imports, connections)
        timed(peer, urls[:20], args.concurrency)
        mine: list[float] = []
        theirs: list[float] = []
        for run in range(args.runs):
            mine.append(timed(ours, urls, args.concurrency))
            theirs.append(timed(peer, urls, args.concurrency))
            print(f"run {run + 1}: signalmint {mine[-1]:.0f} pages/s, BeautifulSoup peer {theirs[-1]:.0f}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    stats = ratios(mine, theirs)
    print(f"signalmint / peer: {describe_ratio(stats)}")
    fields: dict[str, Any] = {
        "pages_per_s": f"{span(mine)[0]:.1f}",
        "peer_pages_per_s": f"{span(theirs)[0]:.1f}",
        **ratio_fields("ratio", stats),
    }
    print_result(fields)


if __name__ == "__main__":
    main()
