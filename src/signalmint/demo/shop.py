"""The demo's own shop and news feed: a tiny HTTP server on 127.0.0.1 whose data changes as it runs.

``signalmint demo`` starts one (a free port, a daemon thread) and points two automations at
it: ``shop-price-drop`` (``web_page`` + ``price_drop``) reads its product pages, schema.org
JSON-LD as a real shop serves them, and ``news-keyword`` (``rss`` + ``new_item``) its RSS feed.
Everything is a function of the time since the server started, on a fixed, seeded cycle, so
a run is reproducible: each product is on sale for the second half of its own cycle (20 to 40
seconds at speed 1) and out of stock for one quarter of it; the feed gains an item every
``item_every`` seconds (20 at speed 1), every other one matching the demo's keywords.

>>> shop = LocalShop(speed=1000.0)
>>> shop.start()
>>> import httpx
>>> "application/ld+json" in httpx.get(shop.product_urls[0]).text
True
>>> shop.close()
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape as xml_escape

__all__ = ["KEYWORDS", "LocalShop", "Product"]

KEYWORDS = ["python", "security", "release"]

_PRODUCTS = [
    ("stovetop-kettle", "Stovetop kettle, 1.7 l", 49.90),
    ("burr-grinder", "Burr coffee grinder E65", 189.00),
    ("pour-over-set", "Pour-over set, glass", 34.50),
    ("espresso-cups", "Espresso cups, set of 4", 24.00),
]

_HEADLINES = [  # from the fourth on, every other one matches KEYWORDS
    "City council approves new bike lanes",
    "Local bakery wins national award",
    "Weather: a mild week ahead",
    "Python 3.15 release candidate is out",
    "Museum reopens after renovation",
    "Security advisory: patch your routers now",
    "Football: the derby ends in a draw",
    "Release notes: the kernel's new scheduler",
    "Train timetable changes from Monday",
    "Security researchers find flaw in smart locks",
]


@dataclass(frozen=True, slots=True)
class Product:
    slug: str
    title: str
    price: float  # the full price
    cycle: float  # seconds of one full-price/sale cycle
    sale: float  # fraction off during the sale, 0.15 to 0.35
    phase: float  # seconds into its cycle at the start


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reader that went away mid-answer (a source stopping with the demo) is nothing to
        report; anything else prints its traceback, as http.server does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LocalShop:
    """The demo's shop and feed on ``127.0.0.1``; ``speed`` compresses its clock."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        seed: int = 7,
        item_every: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rng = random.Random(seed)
        self.speed = speed
        self.clock = clock
        self.item_every = item_every
        self.products = [
            Product(slug, title, price, cycle, round(rng.uniform(0.15, 0.35), 2), rng.uniform(0.0, 0.4) * cycle)
            for slug, title, price in _PRODUCTS
            for cycle in [rng.uniform(20.0, 40.0)]
        ]
        self._started = clock()
        self._wall = datetime.now(UTC)
        self._server: _Server | None = None

    # -- the data, a function of the shop's elapsed time --------------------------------------

    def elapsed(self) -> float:
        """Seconds of shop time since the start (wall seconds times ``speed``)."""
        return (self.clock() - self._started) * self.speed

    def offer(self, product: Product, at: float | None = None) -> tuple[float, bool]:
        """The product's price and whether it is in stock at shop time ``at``."""
        t = ((self.elapsed() if at is None else at) + product.phase) % product.cycle / product.cycle
        on_sale = t >= 0.5
        price = round(product.price * (1 - product.sale), 2) if on_sale else product.price
        in_stock = not 0.25 <= t < 0.5  # sold out just before each sale, back for it
        return price, in_stock

    def items(self, at: float | None = None) -> list[tuple[int, str, datetime]]:
        """The feed's items (newest first): three old ones, then one every ``item_every``."""
        count = 3 + int((self.elapsed() if at is None else at) // self.item_every)
        return [
            (
                k,
                _HEADLINES[k % len(_HEADLINES)],
                self._wall + timedelta(seconds=(k - 3) * self.item_every / self.speed),
            )
            for k in range(max(0, count - 20), count)
        ][::-1]

    # -- HTTP ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the shop is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def product_urls(self) -> list[str]:
        return [f"{self.base_url}/products/{p.slug}" for p in self.products]

    @property
    def feed_url(self) -> str:
        return f"{self.base_url}/news.xml"

    def start(self) -> None:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = shop.page(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo's log is for signals
                return

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="demo-shop", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def page(self, path: str) -> tuple[bytes, str]:
        """The body and content type served at ``path``; an empty body is a 404."""
        if path == "/news.xml":
            return self._feed().encode(), "application/rss+xml; charset=utf-8"
        for p in self.products:
            if path == f"/products/{p.slug}":
                return self._product_page(p).encode(), "text/html; charset=utf-8"
        return b"", "text/plain"

    def _product_page(self, p: Product) -> str:
        price, in_stock = self.offer(p)
        data = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": p.title,
            "sku": p.slug,
            "offers": {
                "@type": "Offer",
                "price": f"{price:.2f}",
                "priceCurrency": "EUR",
                "availability": "https://schema.org/" + ("InStock" if in_stock else "OutOfStock"),
            },
        }
        return (
            f"<!doctype html><html><head><title>{escape(p.title)}</title>"
            f'<script type="application/ld+json">{json.dumps(data)}</script></head>'
            f"<body><h1>{escape(p.title)}</h1><p class=price>€{price:.2f}</p>"
            f"<p>{'In stock' if in_stock else 'Sold out'}</p></body></html>"
        )

    def _feed(self) -> str:
        entries = "".join(
            f"<item><title>{xml_escape(title)}</title><link>{self.base_url}/news/{k}</link>"
            f'<guid isPermaLink="false">demo-news-{k}</guid><pubDate>{format_datetime(when)}</pubDate>'
            f"<description>{xml_escape(title)}. A story from the demo's local newsroom.</description></item>"
            for k, title, when in self.items()
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Demo local news</title><link>{self.base_url}/</link>"
            f"<description>The demo's own feed</description>{entries}</channel></rss>"
        )
