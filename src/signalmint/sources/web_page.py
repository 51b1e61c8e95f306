"""Product pages of shops: price, availability and a watched region's text, one row per changed page.

Every ``interval`` the source fetches each of its ``urls`` (through
:class:`~signalmint.sources.fetch.Fetcher`: conditional GET, per-host rate limit, retries
with backoff, the SSRF guard) and reads each page that changed with
:func:`~signalmint.sources.shop.extract` (schema.org JSON-LD, then microdata, then
``selectors``). One frame per poll holds a row per changed page:

- **key**: the page's URL (as configured); **time**: the poll time;
- **metrics**: ``price`` and ``in_stock`` (1 or 0), NaN when the page does not say;
- **texts**: ``title``, ``url`` (the configured URL) and ``text`` (the plain text of the
  ``text_selector`` region, for ``change``; null without one).

A page that answers 304, or the same bytes as last time, gives no row. A page with nothing
to watch (no price, no availability and no ``text_selector`` match) is counted as
``malformed`` and gives no row: a shop that changed its layout shows up in the counts, not
as a silent stream of empty rows. Nothing stops the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import numpy as np
from parsel import Selector
from pydantic import Field, field_validator

from ..config import Duration
from ..net.ssrf import Resolver
from ..records import Frame, Schema, to_datetime64
from .fetch import Page, PoliteOptions, PoliteSource
from .hosts import HostGate
from .shop import Product, extract, select
from .validate import RowValidator

__all__ = ["WebPage", "WebPageOptions"]

log = logging.getLogger("signalmint.sources")

#: Pages larger than this are parsed in a worker thread, so the event loop keeps serving.
THREAD_ABOVE = 256 * 1024

SelectorField = Literal["price", "in_stock", "title"]


class WebPageOptions(PoliteOptions):
    """Settings of the ``web_page`` source."""

    interval: Duration = Field(timedelta(hours=1), description="Time between two polls of every page.")
    selectors: dict[SelectorField, str] = Field(
        default_factory=dict, description="CSS or XPath for price, in_stock, title (fallback to schema.org data)."
    )
    text_selector: str | None = Field(None, description="CSS or XPath of the region whose text is watched.")

    @field_validator("selectors")
    @classmethod
    def _valid_selectors(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expression in value.items():
            _check_selector(expression, f"selectors.{name}")
        return value

    @field_validator("text_selector")
    @classmethod
    def _valid_text_selector(cls, value: str | None) -> str | None:
        if value is not None:
            _check_selector(value, "text_selector")
        return value


def _check_selector(expression: str, where: str) -> None:
    try:
        select(Selector(text="<html></html>"), expression)
    except Exception as exc:  # cssselect and lxml raise their own errors
        raise ValueError(f"{where}: {expression!r} is neither valid CSS nor XPath ({exc})") from None


class WebPage(PoliteSource):
    """Price and availability of product pages (see the module doc)."""

    kind: ClassVar[str] = "web_page"
    Options: ClassVar[type[WebPageOptions]] = WebPageOptions
    schema: ClassVar[Schema] = {"price": "metric", "in_stock": "metric", "title": "text", "url": "text", "text": "text"}

    def __init__(
        self,
        urls: list[str],
        interval: timedelta = timedelta(hours=1),
        selectors: Mapping[str, str] | None = None,
        text_selector: str | None = None,
        timeout: float = 20.0,
        retries: int = 3,
        backoff: float = 1.0,
        host_interval: float = 1.0,
        user_agent: str | None = None,
        allow_private: bool = False,
        max_bytes: int = 5_000_000,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resolver: Resolver | None = None,
        hosts: HostGate | None = None,
    ) -> None:
        self.selectors = dict(selectors or {})
        self.text_selector = text_selector
        self.urls, self.interval = list(urls), interval
        self._polite(
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            host_interval=host_interval,
            user_agent=user_agent,
            allow_private=allow_private,
            max_bytes=max_bytes,
            clock=clock,
            sleep=sleep,
            resolver=resolver,
            hosts=hosts,
        )

    def __repr__(self) -> str:
        return f"WebPage(urls={self.urls!r}, interval={self.interval!r})"

    async def _read(self, url: str, page: Page) -> Product | None:
        try:
            if len(page.body) > THREAD_ABOVE:
                product = await asyncio.to_thread(extract, page.body, self.selectors, self.text_selector)
            else:
                product = extract(page.body, self.selectors, self.text_selector)
        except Exception as exc:  # lxml gives up on some documents: counted, never raised
            self._rejected["malformed"] += 1
            log.warning("web_page: %s: the page could not be parsed: %s", url, exc)
            return None
        if product.empty:
            self._rejected["malformed"] += 1
            log.warning("web_page: %s: no price, availability or watched text found", url)
            return None
        return product

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """One frame of the pages that changed per poll, forever."""
        validator = RowValidator(self._rejected, source=self.kind, schema=self.schema)
        cutoff = None if since is None else int(to_datetime64(since).astype(np.int64))
        fetcher = self.fetcher = self._fetcher()
        try:
            async with fetcher.session() as session:
                while True:
                    started = self.clock()
                    pages = await asyncio.gather(*(fetcher.get(session, url) for url in self.urls))
                    now_ns = int(self.clock() * 1e9)
                    rows: list[tuple[str, Product]] = []
                    for url, page in zip(self.urls, pages, strict=True):
                        product = None if page is None else await self._read(url, page)
                        if product is not None and (cutoff is None or now_ns > cutoff):
                            rows.append((url, product))
                    if rows:
                        frame = validator.check(_frame(rows, now_ns))
                        if len(frame):
                            yield frame
                    wait = self.interval.total_seconds() - (self.clock() - started)
                    await (self.sleep(wait) if wait > 0 else asyncio.sleep(0))
        finally:
            validator.flush()


def _frame(rows: list[tuple[str, Product]], now_ns: int) -> Frame:
    n = len(rows)

    def texts(values: list[Any]) -> Any:
        return np.array(values, dtype=object)

    return Frame(
        keys=np.array([url for url, _ in rows], dtype=str),
        times=np.full(n, now_ns, dtype=np.int64).view("datetime64[ns]"),
        columns={
            "price": np.array([p.price for _, p in rows], dtype=np.float64),
            "in_stock": np.array([p.in_stock for _, p in rows], dtype=np.float64),
        },
        texts={
            "title": texts([p.title for _, p in rows]),
            "url": texts([url for url, _ in rows]),
            "text": texts([p.text for _, p in rows]),
        },
    )
