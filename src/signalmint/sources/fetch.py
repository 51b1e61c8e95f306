"""Polite, robust HTTP GETs for the sources that read the web (``rss``, ``web_page``, ``http_json``).

What every request does, and what was decided:

- **Who is asking.** A ``User-Agent`` naming the operator's site: the source's ``user_agent``
  option, else ``signalmint/<version> (+<base_url>)`` (the engine fills in the settings'
  ``base_url``), so a site owner can see who reads them and reach the operator.
- **Conditional GET.** The ``ETag`` and ``Last-Modified`` of each URL's last 200 are sent
  back as ``If-None-Match`` and ``If-Modified-Since``; a ``304`` gives no body (no rows).
  A 200 whose body is byte-for-byte the last one is treated the same (many servers send no
  validators).
- **A per-host rate limit.** Requests to one host are at least ``host_interval`` seconds
  apart, however many of its URLs are on that host and however many automations read it
  (the process's :class:`~signalmint.sources.hosts.HostGate`); other hosts go in parallel.
- **Timeouts, retries and backoff.** Each request is bounded by ``timeout``. A connection
  error, a timeout, a 5xx or a 408 is retried up to ``retries`` times, ``backoff`` seconds
  doubled per failure (at most 60); a 429 or 503 waits at least its ``Retry-After``. Another
  4xx is not retried. Each failure is counted in the source's ``rejected`` (``http_error``,
  ``unreachable``, ``rate_limited``, ``too_large``, ``unsafe_url``) and logged; the URL is
  asked again at the next poll. Nothing raises into the engine.
- **The SSRF guard.** Unless ``allow_private`` is set, every URL (each redirect hop too) must
  be ``http``/``https`` on a public host name or address, without credentials or a browser
  "bad port", and every address a name resolves to is vetted before the socket connects
  (:class:`~signalmint.net.ssrf.VettedResolver`), so DNS rebinding cannot reach a
  private address. Redirects are followed by hand (at most 5) so each hop is vetted, and
  the caller's own headers (an API token) are not sent on to another origin.
  URLs come from the operator's config today, but a template or an admin form may hand
  them to a customer, so the guard is on by default; ``allow_private: true`` is for intranet
  pages and local testing. Plain ``http`` is allowed: reading a public page over http is
  not a server-side request forgery.
- **Bodies** are decompressed by aiohttp and capped at ``max_bytes`` (``too_large``).
  No cookies are kept and proxy environment variables are not read.

Why aiohttp rather than httpx: the SSRF guard must vet the addresses the client dials, and
the project already has an aiohttp resolver that does (``VettedResolver``).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import aiohttp
import yarl
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..errors import DeliveryError
from ..net.ssrf import BAD_PORTS, Resolver, UnsafeTarget, check_host
from ..net.vetted import VettedResolver
from .agent import default_user_agent
from .hosts import HostGate, gate_for, host_of

__all__ = [
    "MAX_BACKOFF",
    "FetchOptions",
    "Fetcher",
    "Page",
    "PoliteOptions",
    "PoliteSource",
    "default_user_agent",
    "vet_url",
]

log = logging.getLogger("signalmint.sources")

#: Longest wait between two attempts at one URL, seconds.
MAX_BACKOFF = 60.0
#: Redirect hops followed per request.
MAX_REDIRECTS = 5
_RETRIED = frozenset({408, 500, 502, 503, 504})


def vet_url(url: str, *, allow_private: bool = False) -> str:
    """Refuse a URL a source must not fetch (raises ``ValueError`` with the reason); return it.

    >>> vet_url("https://shop.example.com/p/1")
    'https://shop.example.com/p/1'
    >>> vet_url("http://10.0.0.8/admin")
    Traceback (most recent call last):
    ...
    ValueError: http://10.0.0.8/admin: 10.0.0.8 is a private address (set allow_private: true for intranet pages)
    """
    try:
        parsed = yarl.URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{url}: not a valid URL ({exc})") from None
    if parsed.scheme.lower() not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"{url}: write an absolute http(s) URL")
    if allow_private:
        return url
    try:
        check_host(parsed.raw_host, subject=url)
    except UnsafeTarget as exc:
        raise ValueError(f"{exc} (set allow_private: true for intranet pages)") from None
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise ValueError(f"{url}: credentials in the URL (user:password@) are not allowed")
    if port is None or port in BAD_PORTS:
        raise ValueError(f"{url}: port {port} is not allowed")
    return url


class FetchOptions(BaseModel):
    """The options every web source shares (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # before the URLs, whose validators read it
    allow_private: bool = Field(False, description="Let URLs reach loopback and private addresses.")
    timeout: float = Field(20.0, gt=0, description="Seconds before a request is abandoned.")
    retries: int = Field(3, ge=0, le=10, description="Retries of a failed request within one poll.")
    backoff: float = Field(1.0, ge=0, description="First retry delay in seconds (doubles, at most 60).")
    host_interval: float = Field(1.0, ge=0, description="Least seconds between two requests to one host.")
    user_agent: str | None = Field(None, description="User-Agent (default: signalmint/<version> (+base_url)).")
    max_bytes: int = Field(5_000_000, ge=1024, description="Largest body read, bytes.")

    #: Options renamed since: old name -> (new name, what to write instead). ``signalmint check``
    #: points at the old key's line with this; validating in code says the same.
    renamed: ClassVar[Mapping[str, tuple[str, str]]] = MappingProxyType({})

    @model_validator(mode="before")
    @classmethod
    def _no_old_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for old, (new, hint) in cls.renamed.items():
                if old in data:
                    raise ValueError(f"`{old}` was renamed `{new}`: {hint}")
        return data


class PoliteOptions(FetchOptions):
    """:class:`FetchOptions` and the ``urls`` polled (``rss``, ``web_page``)."""

    urls: list[str] = Field(min_length=1, description="The URLs to poll.")

    @field_validator("urls")
    @classmethod
    def _distinct_and_safe(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a URL is listed twice")
        for url in value:
            vet_url(url, allow_private=bool(info.data.get("allow_private", False)))
        return value


@dataclass(frozen=True, slots=True)
class Page:
    """A fetched body, its ``Content-Type`` and the URL it came from (after redirects)."""

    body: bytes
    content_type: str
    url: str


@dataclass
class _Validators:
    etag: str | None = None
    modified: str | None = None
    digest: bytes | None = None


@dataclass
class Fetcher:
    """GETs URLs politely (see the module doc), counting failures in ``rejected``."""

    rejected: Counter[str]
    source: str
    timeout: float = 20.0
    retries: int = 3
    backoff: float = 1.0
    host_interval: float = 1.0
    user_agent: str = field(default_factory=default_user_agent)
    allow_private: bool = False
    max_bytes: int = 5_000_000
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    resolver: Resolver | None = None
    #: The per-host gate (default: the process's on the real clock, see :func:`.hosts.gate_for`).
    hosts: HostGate | None = None
    requests: int = field(default=0, init=False)
    _state: dict[str, _Validators] = field(default_factory=dict, init=False, repr=False)
    _gate: HostGate = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._gate = self.hosts if self.hosts is not None else gate_for(self.clock, self.sleep)

    def session(self) -> aiohttp.ClientSession:
        resolver = None if self.allow_private else VettedResolver(resolver=self.resolver)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, limit_per_host=4),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": self.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    def _fail(self, reason: str, url: str, detail: str) -> None:
        self.rejected[reason] += 1
        log.warning("%s: %s: %s (%s)", self.source, url, detail, reason)

    async def get(self, session: aiohttp.ClientSession, url: str) -> Page | None:
        """``url``'s page if it changed since the last poll; None if not (or on failure)."""
        page, _ok = await self.fetch(session, url)
        return page

    async def fetch(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        conditional: bool = True,
        skip_same: bool = True,
    ) -> tuple[Page | None, bool]:
        """``(page, ok)``: the page, or None with ``ok`` when it did not change (a 304, or with
        ``skip_same`` the same bytes as last time) and without ``ok`` when the request failed
        (counted). ``headers`` are the caller's own (sent to ``url``'s origin only);
        ``conditional`` sends and keeps ``url``'s validators."""
        state = self._state.setdefault(url, _Validators()) if conditional else _Validators()
        for attempt in range(self.retries + 1):
            wait = min(self.backoff * 2**attempt, MAX_BACKOFF)
            try:
                status, body, answer, final = await self._request(session, url, state, headers or {})
            except UnsafeTarget as exc:
                self._fail("unsafe_url", url, str(exc))
                return None, False
            except _TooLarge:
                self._fail("too_large", url, f"body over {self.max_bytes} bytes")
                return None, False
            except _Redirects:
                self._fail("http_error", url, f"more than {MAX_REDIRECTS} redirects")
                return None, False
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError, DeliveryError) as exc:
                # DeliveryError: a name that does not resolve (from the vetting resolver)
                self._fail("unreachable", url, f"{type(exc).__name__}: {str(exc)[:200]}")
            else:
                if status == 304:
                    return None, True
                if status == 200:
                    page = Page(body, answer.get("Content-Type", ""), final)
                    if not conditional:
                        return page, True
                    digest = hashlib.blake2b(body, digest_size=16).digest()
                    state.etag, state.modified = answer.get("ETag"), answer.get("Last-Modified")
                    if skip_same and digest == state.digest:
                        return None, True
                    state.digest = digest
                    return page, True
                if status in (429, 503) and "Retry-After" in answer:
                    self._fail("rate_limited", url, f"HTTP {status}, Retry-After {answer['Retry-After']}")
                    wait = max(wait, _retry_after(answer["Retry-After"]))
                elif status == 429:
                    self._fail("rate_limited", url, "HTTP 429")
                else:
                    self._fail("http_error", url, f"HTTP {status}")
                    if status not in _RETRIED:
                        return None, False
            if attempt < self.retries:
                await self.sleep(wait)
        return None, False

    async def _request(
        self, session: aiohttp.ClientSession, url: str, state: _Validators, own: Mapping[str, str]
    ) -> tuple[int, bytes, Any, str]:
        headers = dict(own)
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.modified:
            headers["If-Modified-Since"] = state.modified
        origin = host_of(url)
        target = url
        for _hop in range(MAX_REDIRECTS + 1):
            vetted = yarl.URL(target)
            if not self.allow_private:
                try:
                    vet_url(target)
                except ValueError as exc:
                    raise UnsafeTarget(str(exc), target=target) from None
            if host_of(vetted) != origin:  # a token for one API is not handed to another host
                headers = {}
            await self._gate.turn(host_of(vetted), self.host_interval)
            self.requests += 1
            async with session.get(vetted, headers=headers, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location:
                    target = str(vetted.join(yarl.URL(location)))
                    continue
                body = b""
                if response.status == 200:
                    body = await response.content.read(self.max_bytes + 1)
                    if len(body) > self.max_bytes:
                        raise _TooLarge
                return response.status, body, response.headers, target
        raise _Redirects


class _TooLarge(Exception):
    pass


class _Redirects(Exception):
    pass


def _retry_after(value: str) -> float:
    """Seconds to wait from a ``Retry-After`` (seconds or an HTTP date), at most a minute."""
    try:
        return min(max(float(value), 0.0), MAX_BACKOFF)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0
    return min(max(when - time.time(), 0.0), MAX_BACKOFF)


class PoliteSource:
    """What every web-fetching source (``rss``, ``web_page``, ``http_json``) shares: its politeness
    settings (:class:`FetchOptions`), its counts of rejected requests and rows, and its :class:`Fetcher`."""

    kind: ClassVar[str]

    def _polite(
        self,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        host_interval: float,
        user_agent: str | None,
        allow_private: bool,
        max_bytes: int,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        resolver: Resolver | None,
        hosts: HostGate | None = None,
    ) -> None:
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.host_interval, self.user_agent, self.allow_private = host_interval, user_agent, allow_private
        self.max_bytes = max_bytes
        self.clock, self.sleep, self.resolver, self.hosts = clock, sleep, resolver, hosts
        self._rejected: Counter[str] = Counter()
        self.fetcher: Fetcher | None = None

    @property
    def rejected(self) -> Mapping[str, int]:
        """Failed requests and unreadable documents so far, by reason."""
        return MappingProxyType(self._rejected)

    def _fetcher(self) -> Fetcher:
        return Fetcher(
            self._rejected,
            self.kind,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            host_interval=self.host_interval,
            user_agent=self.user_agent or default_user_agent(),
            allow_private=self.allow_private,
            max_bytes=self.max_bytes,
            clock=self.clock,
            sleep=self.sleep,
            resolver=self.resolver,
            hosts=self.hosts,
        )
