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
- **Polite.** A ``User-Agent`` naming the operator's ``site``; at most ``rate`` requests
  per second to one host; conditional GET: the first page's ``ETag`` and
  ``Last-Modified`` are sent back, and a 304 means nothing changed (no rows, no frame).
- **Robust.** Each request times out after ``timeout`` seconds; a failure (connection
  error, timeout, 429 or 5xx) is retried ``retries`` times with backoff (``backoff``
  doubled per failure, at most 60 s; a 429's ``Retry-After`` is the least wait), then the
  poll is given up and the next one is scheduled. Nothing here stops the engine: every
  failure and bad row is counted in ``rejected`` by reason: ``http_error``,
  ``rate_limited``, ``poll_failed``, ``bad_json``, ``missing_key``, ``non_numeric``,
  ``bad_time``, ``naive_timestamp`` (a time without zone) and the row checks of
  :mod:`.validate`. A missing metric (null) is kept as NaN (missing).
- **Secrets.** Header values may hold ``${VAR}``, read from the environment when the
  stream starts (so the secret is neither in the config file nor needed by ``check``).
- **SSRF.** Every URL (the configured one and each next page) is vetted by the delivery
  guard, and the connection dials only vetted addresses; loopback and plain ``http`` are
  refused unless ``allow_loopback`` (for local testing).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time as _time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import jmespath
import numpy as np
from croniter import croniter
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import __version__
from ..config import Duration
from ..errors import SourceError
from ..net.ssrf import UnsafeTarget, VettedResolver, check_url
from ..records import ColumnKind, Frame, to_datetime64
from .validate import RowValidator

__all__ = ["HttpJson", "HttpJsonOptions", "next_run"]

log = logging.getLogger("signalmint.sources")

MAX_BACKOFF = 60.0
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile(expr: str) -> Any:
    try:
        return jmespath.compile(expr)
    except JMESPathError as exc:
        raise ValueError(f"not a JMESPath expression: {expr!r} ({exc})") from None


class HttpJsonOptions(BaseModel):
    """Settings of the ``http_json`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="The API address (https; http and loopback only with allow_loopback).")
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
    timeout: float = Field(10.0, gt=0, description="Seconds before a request is abandoned.")
    retries: int = Field(3, ge=0, le=20, description="Retries of a failed request before the poll is given up.")
    backoff: float = Field(1.0, gt=0, description="First retry delay in seconds (doubles, at most 60).")
    rate: float = Field(1.0, gt=0, description="Most requests per second to one host.")
    site: str | None = Field(None, description="The operator's site, named in the User-Agent.")
    allow_loopback: bool = Field(False, description="Let loopback addresses and plain http through (testing).")

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
        try:
            check_url(self.url, allow_loopback=self.allow_loopback)
        except UnsafeTarget as exc:
            raise ValueError(str(exc)) from None
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


class HttpJson:
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
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        rate: float = 1.0,
        site: str | None = None,
        allow_loopback: bool = False,
        *,
        clock: Callable[[], float] = _time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.key, self.time = url, key, time
        self.metrics, self.texts = dict(metrics), dict(texts or {})
        self.interval = interval if interval is not None or cron is not None else timedelta(minutes=5)
        self.cron, self.timezone = cron, timezone
        self.headers = dict(headers or {})
        self.items, self.next, self.cursor_param, self.max_pages = items, next, cursor_param, max_pages
        self.timeout, self.retries, self.backoff, self.rate = timeout, retries, backoff, rate
        self.site, self.allow_loopback = site, allow_loopback
        self.clock, self.sleep = clock, sleep
        self.environ = environ if environ is not None else os.environ
        self._items, self._key = _compile(items), _compile(key)
        self._time = _compile(time) if time is not None else None
        self._next = _compile(next) if next is not None else None
        self._metrics = {name: _compile(e) for name, e in self.metrics.items()}
        self._texts = {name: _compile(e) for name, e in self.texts.items()}
        self._rejected: Counter[str] = Counter()
        self._host_next: dict[str, float] = {}  # host -> earliest time of its next request
        self._validators: dict[str, str] = {}  # conditional GET: ETag / Last-Modified of the first page
        self.requests = 0
        self.polls = 0

    def __repr__(self) -> str:
        return f"HttpJson(url={self.url!r}, metrics={list(self.metrics)!r})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Failed requests and rejected rows so far, by reason."""
        return MappingProxyType(self._rejected)

    @property
    def user_agent(self) -> str:
        site = f"; +{self.site}" if self.site else ""
        return f"signalmint/{__version__} (http_json{site})"

    def next_poll(self, after: float) -> float:
        """When the poll after one started at ``after`` (epoch seconds) is due."""
        if self.cron is not None:
            return next_run(self.cron, self.timezone, datetime.fromtimestamp(after, UTC)).timestamp()
        assert self.interval is not None
        return after + self.interval.total_seconds()

    def _headers(self) -> dict[str, str]:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise SourceError(f"http_json: header needs ${{{name}}}, which is not in the environment")
            return self.environ[name]

        out = {"User-Agent": self.user_agent, "Accept": "application/json"}
        out.update({name: _VAR.sub(value, v) for name, v in self.headers.items()})
        return out

    # -- fetching ----------------------------------------------------------------

    async def _polite(self, host: str) -> None:
        """Wait for ``host``'s turn (``rate`` requests per second)."""
        now = self.clock()
        turn = self._host_next.get(host, now)
        if turn > now:
            await self.sleep(turn - now)
        self._host_next[host] = max(turn, now) + 1.0 / self.rate

    async def _get(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], first: bool) -> Any:
        """The decoded JSON of ``url``; ``None`` for a 304 or a request given up (counted)."""
        failures = 0
        while True:
            least = 0.0
            await self._polite(urlsplit(url).netloc)
            sent = dict(headers)
            if first:
                sent.update(self._validators)
            self.requests += 1
            try:
                async with session.get(url, headers=sent, allow_redirects=False) as response:
                    status = response.status
                    if status == 304:
                        return None
                    if status == 200:
                        try:
                            body = await response.json(content_type=None)
                        except ValueError:
                            self._rejected["bad_json"] += 1
                            log.warning("http_json %s: the answer is not JSON", url)
                            return None
                        if first:
                            self._remember(response.headers)
                        return body
                    if status == 429:
                        self._rejected["rate_limited"] += 1
                        least = _retry_after(response.headers.get("Retry-After"), self.backoff)
                    else:
                        self._rejected["http_error"] += 1
                    log.warning("http_json %s: HTTP %d", url, status)
                    if status != 429 and status < 500:  # a 4xx other than 429 will not get better
                        self._rejected["poll_failed"] += 1
                        return None
            except UnsafeTarget as exc:
                self._rejected["http_error"] += 1
                self._rejected["poll_failed"] += 1
                log.warning("http_json %s: refused by the SSRF guard: %s", url, exc)
                return None
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._rejected["http_error"] += 1
                log.warning("http_json %s: %s: %s", url, type(exc).__name__, str(exc)[:200])
            failures += 1
            if failures > self.retries:
                self._rejected["poll_failed"] += 1
                log.warning("http_json %s: given up after %d attempts; next poll as scheduled", url, failures)
                return None
            await self.sleep(max(least, min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)))

    def _remember(self, headers: Mapping[str, str]) -> None:
        validators = {}
        if "ETag" in headers:
            validators["If-None-Match"] = headers["ETag"]
        if "Last-Modified" in headers:
            validators["If-Modified-Since"] = headers["Last-Modified"]
        self._validators = validators

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
        headers = self._headers()
        url: str | None = self.url
        seen: set[str] = set()
        rows: list[Any] = []
        while url is not None and len(seen) < self.max_pages and url not in seen:
            if seen:  # a page URL comes from the answer: vet it like the configured one
                try:
                    check_url(url, allow_loopback=self.allow_loopback)
                except UnsafeTarget as exc:
                    self._rejected["http_error"] += 1
                    log.warning("http_json: next page %s refused: %s", url, exc)
                    break
            first = not seen
            seen.add(url)
            page = await self._get(session, url, headers, first)
            if page is None:
                if first:
                    return None
                break  # keep the pages we have
            found = self._items.search(page)
            if isinstance(found, list):
                rows.extend(found)
            elif found is not None:
                self._rejected["bad_json"] += 1
                log.warning("http_json %s: `items` gives %s, not a list", url, type(found).__name__)
            url = self._following(page, url)
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

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """A frame per poll that found rows after ``since``, forever."""
        schema: dict[str, ColumnKind] = {**dict.fromkeys(self.metrics, "metric"), **dict.fromkeys(self.texts, "text")}
        validator = RowValidator(self._rejected, source=self.kind, schema=schema)
        floor = int(to_datetime64(since).astype(np.int64)) if since is not None else None
        connector = aiohttp.TCPConnector(resolver=VettedResolver(allow_loopback=self.allow_loopback))
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
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


def _retry_after(value: str | None, default: float) -> float:
    try:
        return max(float(value), 0.0) if value is not None else default
    except ValueError:
        return default


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
