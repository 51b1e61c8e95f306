"""RSS and Atom feeds, each entry a row of text, polled politely.

Every ``interval`` the source fetches each of its ``urls`` (through
:class:`~signalmint.sources.fetch.Fetcher`: conditional GET, per-host rate limit, retries
with backoff, the SSRF guard) and parses them with ``feedparser`` (RSS 0.9x-2.0, RSS 1.0,
Atom 0.3/1.0, ill-formed XML included). One frame per poll holds the entries not given
before:

- **key**: a stable id: the entry's ``id`` (Atom ``<id>``, RSS ``<guid>``), else its link,
  else a hash of its title and link. An id that is not a URL or URN (a bare ``1234``, as
  some feeds number their items) is prefixed with the feed's URL and ``#``, so two feeds
  cannot collide.
- **time**: the entry's published date, else its updated date, else the poll time; a date
  in the future is clamped to the poll time (so the engine's cursor never runs ahead of
  the clock).
- **texts**: ``title``, ``url`` (the entry's link), ``text`` (its summary or content as
  plain text, at most 10,000 characters) and ``feed`` (the feed's URL).

An entry is given once (the ids of the last 100,000 are remembered). After a restart the
engine passes its cursor (``since``): entries dated at or before it are not given again.
A feed that cannot be parsed at all (feedparser's ``bozo`` with no entries) is counted as
``malformed``; a feed with errors but entries is used. Nothing stops the stream.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import feedparser  # type: ignore[import-untyped]
import numpy as np
from pydantic import Field

from ..config import Duration
from ..net.ssrf import Resolver
from ..records import Frame, Schema, to_datetime64
from .fetch import Page, PoliteOptions, PoliteSource
from .hosts import HostGate
from .validate import RowValidator

__all__ = ["Rss", "RssOptions", "entry_rows"]

log = logging.getLogger("signalmint.sources")

#: Ids remembered so an entry is given once.
MEMORY = 100_000
#: Longest ``text`` kept, characters.
MAX_TEXT = 10_000

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class RssOptions(PoliteOptions):
    """Settings of the ``rss`` source."""

    interval: Duration = Field(timedelta(minutes=15), description="Time between two polls of every feed.")


def plain(value: str) -> str:
    """HTML to plain text: tags dropped, entities decoded, whitespace collapsed.

    >>> plain("<p>Rust&nbsp;2.0 <b>is</b>\\n here</p>")
    'Rust 2.0 is here'
    """
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


def _when(entry: Any) -> int | None:
    for name in ("published_parsed", "updated_parsed"):
        parsed = entry.get(name)
        if parsed:
            return calendar.timegm(parsed) * 1_000_000_000
    return None


def entry_rows(
    feed_url: str, page: Page, now_ns: int
) -> list[tuple[str, int, str | None, str | None, str, str]] | None:
    """(key, time ns, title, url, text, feed) of each entry of a feed document; None if unreadable."""
    headers = {"content-location": page.url, "content-type": page.content_type or "application/xml"}
    parsed = feedparser.parse(page.body, sanitize_html=False, resolve_relative_uris=True, response_headers=headers)
    if parsed.get("bozo") and not parsed.entries:
        return None
    rows = []
    for entry in parsed.entries:
        title = entry.get("title") or None
        link = entry.get("link") or None
        ident = entry.get("id") or link
        if not ident:
            ident = hashlib.sha256(f"{title}\n{link}".encode()).hexdigest()[:24]
            ident = f"{feed_url}#{ident}"
        elif ":" not in ident:
            ident = f"{feed_url}#{ident}"
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry["content"][0].get("value") or ""
        at = _when(entry)
        at = now_ns if at is None or at > now_ns else at
        rows.append((ident, at, plain(title) if title else None, link, plain(summary)[:MAX_TEXT], feed_url))
    return rows


class Rss(PoliteSource):
    """New entries of RSS and Atom feeds (see the module doc)."""

    kind: ClassVar[str] = "rss"
    Options: ClassVar[type[RssOptions]] = RssOptions
    schema: ClassVar[Schema] = {"title": "text", "url": "text", "text": "text", "feed": "text"}

    def __init__(
        self,
        urls: list[str],
        interval: timedelta = timedelta(minutes=15),
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
        return f"Rss(urls={self.urls!r}, interval={self.interval!r})"

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """One frame of new entries per poll, forever."""
        validator = RowValidator(self._rejected, source=self.kind, schema=self.schema)
        cutoff = None if since is None else int(to_datetime64(since).astype(np.int64))
        seen: dict[str, None] = {}
        fetcher = self.fetcher = self._fetcher()
        try:
            async with fetcher.session() as session:
                while True:
                    started = self.clock()
                    pages = await asyncio.gather(*(fetcher.get(session, url) for url in self.urls))
                    now_ns = int(self.clock() * 1e9)
                    rows = []
                    for url, page in zip(self.urls, pages, strict=True):
                        if page is None:
                            continue
                        try:
                            found = entry_rows(url, page, now_ns)
                        except Exception:  # a parser bug must not stop the stream
                            log.exception("rss: %s: the feed could not be read", url)
                            found = None
                        if found is None:
                            self._rejected["malformed"] += 1
                            log.warning("rss: %s: not a feed (feedparser found no entries)", url)
                            continue
                        for row in found:
                            key = row[0]
                            if key in seen:
                                del seen[key]
                                seen[key] = None
                                continue
                            seen[key] = None
                            if len(seen) > MEMORY:
                                del seen[next(iter(seen))]
                            if cutoff is None or row[1] > cutoff:
                                rows.append(row)
                    if rows:
                        frame = validator.check(_frame(rows))
                        if len(frame):
                            yield frame
                    wait = self.interval.total_seconds() - (self.clock() - started)
                    await (self.sleep(wait) if wait > 0 else asyncio.sleep(0))
        finally:
            validator.flush()


def _frame(rows: list[tuple[str, int, str | None, str | None, str, str]]) -> Frame:
    columns = list(zip(*rows, strict=True))
    return Frame(
        keys=np.array(columns[0], dtype=str),
        times=np.array(columns[1], dtype=np.int64).view("datetime64[ns]"),
        columns={},
        texts={
            name: np.array(values, dtype=object)
            for name, values in zip(("title", "url", "text", "feed"), columns[2:], strict=True)
        },
    )
