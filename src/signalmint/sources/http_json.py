"""Rows from any JSON API, polled on an interval or a cron schedule, mapped by JMESPath.

One poll fetches ``url`` (and its following pages), takes the list of rows ``items``
selects, and makes a row of each: ``key`` (an expression giving the row's key), ``time``
(an expression giving an ISO 8601 time or epoch seconds; the poll time when unset),
``metrics`` (column -> expression giving a number) and ``texts`` (column -> expression
giving a string). Each poll is one frame. What it decided:

- **Schedule.** ``interval`` between the starts of two polls, or ``cron`` (five fields) in
  ``timezone``: 09:00 in ``America/New_York`` stays 09:00 across daylight saving
  (:func:`next_run`).
- **Pages.** ``next`` is an expression over a page giving the next page: a URL (absolute,
  or relative to the page) or a cursor, put into the query as ``cursor_param``. At most
  ``max_pages`` pages per poll; a page URL seen before in the poll ends it.
- **Polite and robust**, as ``rss`` and ``web_page`` are (:mod:`.fetch`, the same option
  names): a ``User-Agent`` naming the operator's site (``user_agent``; by default
  ``signalmint/<version> (+base_url)``); requests to one host at least ``host_interval``
  seconds apart, across every automation of the process reading that host; conditional GET
  (the first page's ``ETag`` and ``Last-Modified`` go back, and a 304 means nothing changed:
  no rows, no frame); ``timeout``, ``retries`` with ``backoff`` (doubled per failure, at most
  60 s; a 429's or 503's ``Retry-After`` is the least wait), a 4xx other than 429 not
  retried; redirects followed (each hop vetted, the request's headers not sent to another
  origin); bodies capped at ``max_bytes``. A poll whose first page fails is given up and the
  next one is scheduled. Nothing here stops the engine: every failure and bad row is counted
  in ``rejected`` by reason: ``http_error``, ``unreachable``, ``rate_limited``,
  ``too_large``, ``unsafe_url``, ``poll_failed`` (a page given up), ``bad_json``,
  ``missing_key``, ``non_numeric``, ``bad_time``, ``naive_timestamp`` (a time without zone)
  and the row checks of :mod:`.validate`. A missing metric (null) is kept as NaN (missing).
- **Secrets.** Header values may hold ``${VAR}``, read from the environment when the
  stream starts (so the secret is neither in the config file nor needed by ``check``).
  Headers are only sent over https (or to a private host with ``allow_private``).
- **SSRF.** The configured URL is vetted by the same guard as ``rss``'s (no loopback,
  private or metadata address unless ``allow_private``), and the connection dials only
  vetted addresses. A next page must stay on the configured URL's origin (scheme, host,
  port): an answer cannot steer the source elsewhere; one that tries is counted as
  ``http_error``.
- **Renamed options.** ``rate``, ``site`` and ``allow_loopback`` (before 0.1) are now
  ``host_interval``, ``user_agent`` and ``allow_private``; the old names are refused with
  the new one (:attr:`HttpJsonOptions.renamed`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time as _time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import jmespath
import numpy as np
import yarl
from croniter import croniter
from jmespath.exceptions import JMESPathError
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..config import Duration
from ..errors import SourceError
from ..net.ssrf import Resolver
from ..records import ColumnKind, Frame, to_datetime64
from .fetch import FetchOptions, PoliteSource, vet_url
from .hosts import HostGate, host_of
from .validate import RowValidator

__all__ = ["HttpJson", "HttpJsonOptions", "next_run"]

log = logging.getLogger("signalmint.sources")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile(expr: str) -> Any:
    try:
        return jmespath.compile(expr)
    except JMESPathError as exc:
        raise ValueError(f"not a JMESPath expression: {expr!r} ({exc})") from None


class HttpJsonOptions(FetchOptions):
    """Settings of the ``http_json`` source (the fetching ones shared with ``rss`` and ``web_page``)."""

    renamed: ClassVar[Mapping[str, tuple[str, str]]] = MappingProxyType(
        {
            "rate": ("host_interval", "seconds between two requests to one host (1 / rate): `host_interval: 1`"),
            "site": ("user_agent", "the whole User-Agent; by default it names base_url: remove `site`"),
            "allow_loopback": ("allow_private", "`allow_private: true` (loopback and private addresses)"),
        }
    )

    url: str = Field(description="The API address (loopback and private addresses only with allow_private).")
    interval: Duration | None = Field(None, description="Time between polls (default 5m when no cron).")
    cron: str | None = Field(None, description="A five-field cron schedule instead of interval.")
    timezone: str = Field("UTC", description="IANA zone the cron schedule is read in.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers; ${VAR} from the environment.")
    items: str = Field("@", description="JMESPath: the list of rows in a page.")
    key: str = Field(description="JMESPath (per row): the row's key.")
    time: str | None = Field(None, description="JMESPath (per row): ISO time or epoch seconds; unset: poll time.")
    metrics: dict[str, str] = Field(description="Column name -> JMESPath (per row) giving a number.")
    texts: dict[str, str] = Field(default_factory=dict, description="Column name -> JMESPath giving a string.")
    next: str | None = Field(None, description="JMESPath (per page): the next page's URL or cursor.")
    cursor_param: str = Field("cursor", description="Query parameter a cursor from `next` is sent in.")
    max_pages: int = Field(10, ge=1, le=1000, description="Most pages fetched per poll.")

    @field_validator("url")
    @classmethod
    def _safe(cls, value: str, info: ValidationInfo) -> str:
        return vet_url(value, allow_private=bool(info.data.get("allow_private", False)))

    @field_validator("items", "key", "time", "next")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("metrics", "texts")
    @classmethod
    def _expressions(cls, value: dict[str, str]) -> dict[str, str]:
        for expr in value.values():
            _compile(expr)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.cron is not None and self.interval is not None:
            raise ValueError("give interval or cron, not both")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"not a cron schedule: {self.cron!r} (five fields, e.g. '*/15 * * * *')")
        if self.interval is not None and self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if not self.metrics and not self.texts:
            raise ValueError("map at least one column (metrics or texts)")
        clash = set(self.metrics) & set(self.texts)
        if clash:
            raise ValueError(f"columns both metric and text: {sorted(clash)}")
        if self.headers and self.url.lower().startswith("http://") and not self.allow_private:
            raise ValueError(f"{self.url}: headers (an API key) would cross the internet in clear: use https")
        return self


def next_run(cron: str, zone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware) that ``cron`` matches, read in ``zone``;
    in UTC. A wall time that does not exist on a spring-forward day is skipped to the next
    existing match, a repeated one (fall back) runs once.

    >>> next_run("0 9 * * *", "America/New_York", datetime(2026, 3, 7, 15, tzinfo=UTC))
    datetime.datetime(2026, 3, 8, 13, 0, tzinfo=datetime.timezone.utc)
    """
    local = after.astimezone(ZoneInfo(zone))
    found = croniter(cron, local).get_next(datetime)
    return found.astimezone(UTC)


class HttpJson(PoliteSource):
    """Rows of a JSON API, one frame per poll."""

    kind: ClassVar[str] = "http_json"
    Options: ClassVar[type[HttpJsonOptions]] = HttpJsonOptions

    @classmethod
    def schema(cls, options: HttpJsonOptions) -> dict[str, ColumnKind]:
        return {**dict.fromkeys(options.metrics, "metric"), **dict.fromkeys(options.texts, "text")}

    def __init__(
        self,
        url: str,
        key: str,
        metrics: Mapping[str, str],
        interval: timedelta | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        headers: Mapping[str, str] | None = None,
        items: str = "@",
        time: str | None = None,
        texts: Mapping[str, str] | None = None,
        next: str | None = None,
        cursor_param: str = "cursor",
        max_pages: int = 10,
        timeout: float = 20.0,
        retries: int = 3,
        backoff: float = 1.0,
        host_interval: float = 1.0,
        user_agent: str | None = None,
        allow_private: bool = False,
        max_bytes: int = 5_000_000,
        *,
        clock: Callable[[], float] = _time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resolver: Resolver | None = None,
        hosts: HostGate | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.key, self.time = url, key, time
        self.metrics, self.texts = dict(metrics), dict(texts or {})
        self.interval = interval if interval is not None or cron is not None else timedelta(minutes=5)
        self.cron, self.timezone = cron, timezone
        self.headers = dict(headers or {})
        self.items, self.next, self.cursor_param, self.max_pages = items, next, cursor_param, max_pages
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
        self.environ = environ if environ is not None else os.environ
        self._items, self._key = _compile(items), _compile(key)
        self._time = _compile(time) if time is not None else None
        self._next = _compile(next) if next is not None else None
        self._metrics = {name: _compile(e) for name, e in self.metrics.items()}
        self._texts = {name: _compile(e) for name, e in self.texts.items()}
        self.polls = 0

    def __repr__(self) -> str:
        return f"HttpJson(url={self.url!r}, metrics={list(self.metrics)!r})"

    @property
    def requests(self) -> int:
        """Requests sent so far."""
        return self.fetcher.requests if self.fetcher is not None else 0

    def next_poll(self, after: float) -> float:
        """When the poll after one started at ``after`` (epoch seconds) is due."""
        if self.cron is not None:
            return next_run(self.cron, self.timezone, datetime.fromtimestamp(after, UTC)).timestamp()
        interval = self.interval or timedelta(minutes=5)
        return after + interval.total_seconds()

    def _headers(self) -> dict[str, str]:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise SourceError(f"http_json: header needs ${{{name}}}, which is not in the environment")
            return self.environ[name]

        out = {"Accept": "application/json"}
        out.update({name: _VAR.sub(value, v) for name, v in self.headers.items()})
        return out

    # -- fetching ----------------------------------------------------------------

    def _following(self, page: Any, current: str) -> str | None:
        """The next page's URL from ``next``, or None."""
        if self._next is None:
            return None
        found = self._next.search(page)
        if found is None or found == "" or isinstance(found, bool):
            return None
        found = str(found)
        if found.startswith(("http://", "https://", "/", "?")):
            return urljoin(current, found)
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != self.cursor_param]
        return urlunsplit(parts._replace(query=urlencode([*query, (self.cursor_param, found)])))

    async def poll(self, session: aiohttp.ClientSession) -> list[Any] | None:
        """The rows of every page of one poll; None when nothing changed (304) or it failed."""
        fetcher = self.fetcher if self.fetcher is not None else self._fetcher()
        self.fetcher = fetcher
        headers = self._headers()
        origin = host_of(self.url)
        url: str | None = self.url
        seen: set[str] = set()
        rows: list[Any] = []
        while url is not None and len(seen) < self.max_pages and url not in seen:
            first = not seen
            if not first and _origin(url) != origin:  # a page URL comes from the answer: same origin only
                self._rejected["http_error"] += 1
                log.warning("http_json: next page %s refused: not on %s", url, origin)
                break
            seen.add(url)
            page, ok = await fetcher.fetch(session, url, headers=headers, conditional=first, skip_same=False)
            if page is None:
                if not ok:
                    self._rejected["poll_failed"] += 1
                    log.warning("http_json %s: given up; next poll as scheduled", url)
                if first:
                    return None
                break  # keep the pages we have
            try:
                body = json.loads(page.body)
            except ValueError:  # UnicodeDecodeError included
                self._rejected["bad_json"] += 1
                log.warning("http_json %s: the answer is not JSON", url)
                if first:
                    return None
                break
            found = self._items.search(body)
            if isinstance(found, list):
                rows.extend(found)
            elif found is not None:
                self._rejected["bad_json"] += 1
                log.warning("http_json %s: `items` gives %s, not a list", url, type(found).__name__)
            url = self._following(body, url)
        return rows

    # -- rows --------------------------------------------------------------------

    def to_frame(self, rows: list[Any], polled_ns: int) -> Frame:
        """The rows as a frame (rows with a bad key, time or metric counted and left out)."""
        keys: list[str] = []
        times: list[int] = []
        metrics: dict[str, list[float]] = {name: [] for name in self._metrics}
        texts: dict[str, list[str | None]] = {name: [] for name in self._texts}
        for row in rows:
            key = self._key.search(row)
            if key is None or key == "" or isinstance(key, dict | list | bool):
                self._rejected["missing_key"] += 1
                continue
            at = polled_ns if self._time is None else _time_ns(self._time.search(row))
            if isinstance(at, str):
                self._rejected[at] += 1
                continue
            values = {name: _number(expr.search(row)) for name, expr in self._metrics.items()}
            if any(v is None for v in values.values()):
                self._rejected["non_numeric"] += 1
                continue
            keys.append(str(key))
            times.append(at)
            for name, value in values.items():
                metrics[name].append(value if value is not None else math.nan)
            for name, expr in self._texts.items():
                text = expr.search(row)
                texts[name].append(None if text is None else text if isinstance(text, str) else str(text))
        return Frame(
            keys=np.array(keys, dtype=str),
            times=np.array(times, dtype=np.int64).view("datetime64[ns]"),
            columns={name: np.array(v, dtype=np.float64) for name, v in metrics.items()},
            texts={name: np.array(v, dtype=object) for name, v in texts.items()},
        )

    # -- the stream --------------------------------------------------------------

    async def stream(self, since: datetime | None = None) -> AsyncGenerator[Frame, None]:
        """A frame per poll that found rows after ``since``, forever."""
        schema: dict[str, ColumnKind] = {**dict.fromkeys(self.metrics, "metric"), **dict.fromkeys(self.texts, "text")}
        validator = RowValidator(self._rejected, source=self.kind, schema=schema)
        floor = int(to_datetime64(since).astype(np.int64)) if since is not None else None
        self.fetcher = self._fetcher()
        async with self.fetcher.session() as session:
            try:
                while True:
                    started = self.clock()
                    self.polls += 1
                    rows = await self.poll(session)
                    if rows:
                        frame = self.to_frame(rows, int(started * 1e9))
                        if floor is not None and len(frame):
                            frame = frame.take(np.asarray(frame.times.view(np.int64) > floor))
                        frame = validator.check(frame)
                        if len(frame):
                            yield frame
                    wait = self.next_poll(started) - self.clock()
                    await (self.sleep(wait) if wait > 0 else asyncio.sleep(0))
            finally:
                validator.flush()


def _number(value: Any) -> float | None:
    """A metric's value: a number (or numeric string; bools as 0/1), NaN for null, None if not numeric."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _time_ns(value: Any) -> int | str:
    """A row's time as epoch nanoseconds, or the rejection reason."""
    if isinstance(value, bool) or value is None:
        return "bad_time"
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds
        return int(seconds * 1e9) if math.isfinite(seconds) else "bad_time"
    if not isinstance(value, str):
        return "bad_time"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "bad_time"
    if parsed.tzinfo is None:
        return "naive_timestamp"
    return int(to_datetime64(parsed).astype(np.int64))


def _origin(url: str) -> str | None:
    try:
        return host_of(yarl.URL(url))
    except (ValueError, TypeError):
        return None
