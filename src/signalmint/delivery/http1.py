"""A small HTTP/1.1 client for webhook POSTs: a keep-alive pool that dials only vetted addresses.

Why not aiohttp: py-spy showed its client dominating the delivery worker's CPU (about 300 µs
per POST). A webhook POST needs much less: one pre-built request buffer
(:func:`request_head` + :func:`encode_request`), one ``transport.write`` on a pooled
connection and a response parsed by ``httptools`` (llhttp, the parser uvicorn uses).
``bench/http_clients.py`` measures the difference against the same local sink.

- Connections are :class:`asyncio.Protocol` objects (so they run on uvloop), pooled per
  ``(scheme, host, port, vetted IP)`` with keep-alive, at most ``limit`` in all and
  ``limit_per_origin`` per ``(scheme, host, port)`` (0: no cap of its own). Idle ones are
  closed after ``keepalive`` seconds, the least recently used first when the pool is full.
- SSRF: addresses come from :func:`~signalmint.net.ssrf.resolve_safe` (every answer
  vetted, IP literals included), cached ``dns_ttl`` seconds, and the socket connects to
  exactly that IP: nothing resolves the name again. ``Host``, TLS SNI and certificate
  verification use the URL's name. Redirects are never followed (a 3xx is a response),
  proxy environment variables are never read, no cookies are kept.
- Responses: status, headers (names lowercased, last value wins), the body up to
  ``body_cap`` bytes (the rest is not read: the connection is closed). Content-Length,
  chunked and read-until-close bodies; HTTP/1.0 and ``Connection: close`` end the
  connection after the response; interim 1xx responses are skipped.
- A request that finds a reused keep-alive connection closed by the server before any byte
  of the response arrived (the idle-close race) is sent once more on a fresh connection.
  Nothing is retried once a response has started.
- Failures raise :class:`HttpError`: :class:`ConnectError`, :class:`ConnectionClosed`,
  :class:`ProtocolError` or :class:`Timeout` (the whole exchange, DNS and waiting for a
  connection included, is bounded by ``timeout``; requests whose deadlines fall in the same
  10 ms share one timer). Refusals by the SSRF guard stay :class:`~signalmint.net.ssrf.UnsafeTarget`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, cast

import httptools
import yarl

from signalmint.net.ssrf import ParsedTarget, Resolver, resolve_safe

__all__ = [
    "BODY_CAP",
    "ConnectError",
    "ConnectionClosed",
    "Http1Pool",
    "HttpError",
    "ProtocolError",
    "Response",
    "Timeout",
    "encode_request",
    "finish_request",
    "request_head",
]

BODY_CAP: Final = 64 * 1024
HEAD_CAP: Final = 64 * 1024  # status line and headers
MAX_HEADERS: Final = 100
_GRAIN: Final = 0.01  # seconds: requests whose deadlines fall in the same slot share one timer
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

Origin = tuple[str, str, int]  # scheme, host, port
Key = tuple[str, str, int, str]  # scheme, host, port, vetted IP


class HttpError(Exception):
    """The exchange failed before a complete response arrived."""


class ConnectError(HttpError):
    """No connection: refused, unreachable, or the TLS handshake (certificate) failed."""


class ConnectionClosed(HttpError):
    """The server closed the connection before the response was complete."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(HttpError):
    """The answer is not a valid HTTP/1.x response (or its head is too large)."""


class Timeout(HttpError, TimeoutError):
    """No complete response within the timeout."""


class _Headers(Mapping[str, str]):
    """A response's headers, decoded (names lowercased, the last value wins) on first use: a
    webhook's 2xx answer is never asked for them, so most responses skip the work."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw}
        return decoded

    def __getitem__(self, name: str) -> str:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


@dataclass(frozen=True, slots=True)
class Response:
    """A response: header names lowercased (last value wins), at most ``body_cap`` body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False


def request_head(target: ParsedTarget, headers: Mapping[str, str], *, method: str = "POST") -> bytes:
    """The request line, ``Host`` and fixed ``headers``, to be completed by :func:`encode_request`.

    >>> from signalmint.net.ssrf import check_url
    >>> request_head(check_url("https://hooks.example.com/in?a=1"), {"user-agent": "x/1"})
    b'POST /in?a=1 HTTP/1.1\\r\\nhost: hooks.example.com\\r\\nuser-agent: x/1\\r\\n'
    """
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != _DEFAULT_PORTS.get(target.scheme):
        host = f"{host}:{target.port}"
    line = f"{method} {_path_qs(target.url)} HTTP/1.1\r\nhost: {host}\r\n"
    return line.encode("ascii") + _encode_fixed(tuple(headers.items()))


@functools.lru_cache(maxsize=10_000)
def _path_qs(url: str) -> str:
    return yarl.URL(url).raw_path_qs or "/"


@functools.lru_cache(maxsize=256)
def _encode_fixed(headers: tuple[tuple[str, str], ...]) -> bytes:
    """:func:`_encode_headers` of a channel's fixed headers: the same for every endpoint, encoded once."""
    return _encode_headers(dict(headers))


def encode_request(head: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    """One buffer: ``head``, per-request ``headers``, ``content-length`` and the body."""
    return finish_request(head, _encode_headers(headers), body)


def finish_request(head: bytes, lines: bytes, body: bytes) -> bytes:
    """:func:`encode_request` with the per-request header ``lines`` already encoded
    (``name: value\\r\\n`` each): the caller vouches that they need no escaping.

    >>> finish_request(b"POST / HTTP/1.1\\r\\nhost: h\\r\\n", b"x-a: 1\\r\\n", b"{}")
    b'POST / HTTP/1.1\\r\\nhost: h\\r\\nx-a: 1\\r\\ncontent-length: 2\\r\\n\\r\\n{}'
    """
    return b"%s%scontent-length: %d\r\n\r\n%s" % (head, lines, len(body), body)


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise ValueError(f"header {name!r} cannot be sent (not a token, or a control character in its value)")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time, the response parsed by httptools."""

    def __init__(self, pool: Http1Pool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.origin: Origin = key[:3]
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.counted = True  # holds a slot in the pool's counts until forgotten
        self.exchanges = 0
        self.reusable = False
        self.idle_since = 0.0
        self._start()

    def _start(self) -> None:
        self.started = False  # a byte of the response arrived
        self.head_done = False
        self.head_size = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []  # decoded only if asked: see _Headers
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # nothing asked: a server's parting 408...
            self.abort()
            return
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, ProtocolError) else exc
            self._fail(ProtocolError(f"invalid HTTP response: {cause}"))
            return
        if not self.head_done and self.waiter is not None:
            self.head_size += len(data)
            if self.head_size > HEAD_CAP:
                self._fail(ProtocolError(f"the response head is larger than {HEAD_CAP} bytes"))
                return
        if self.truncated and self.waiter is not None:  # the body cap: answer now, drop the rest
            self._finish(reusable=False)
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        headers = _Headers(self.raw_headers)
        if self.head_done and "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", ""):
            self._finish(reusable=False)  # a body delimited by the end of the connection (HTTP/1.0 style)
            return
        where = "in the middle of the response" if self.started else "before answering"
        self.waiter = None
        waiter.set_exception(
            ConnectionClosed(f"the server closed the connection {where}", response_started=self.started)
        )

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second response nobody asked for: do not reuse the connection
            self._start()
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        raw = self.raw_headers
        if len(raw) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} headers")
        raw.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        room = self.pool.body_cap - self.size
        if len(body) > room:
            body = body[:room]
            self.truncated = True
        if body:
            self.chunks.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        if self.waiter is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim response: the real one follows
            self._start()
            return
        self._finish(reusable=self.parser.should_keep_alive() and status != 101)

    # -- exchanges ----------------------------------------------------------------------

    def exchange(self, data: bytes) -> asyncio.Future[Response]:
        """Send ``data``; the future gets the response (or an HttpError)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionClosed("the server closed the idle connection", response_started=False)
        self._start()
        self.reusable = False
        waiter = self.waiter = self.pool._loop.create_future()
        transport.write(data)
        return waiter

    def _finish(self, *, reusable: bool) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        status = self.parser.get_status_code()
        self.exchanges += 1
        self.reusable = reusable and not self.truncated
        waiter.set_result(Response(status, _Headers(self.raw_headers), body, self.truncated))

    def _fail(self, exc: HttpError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to webhook receivers; see the module docstring.

    ``resolver`` answers names (default: the system's getaddrinfo), always through the SSRF
    guard with ``allow_loopback`` (``own_origin``, in demo mode, is the one origin dialled without
    it: the demo's own request inspector, an IP literal); ``ssl_context`` replaces ``ssl.create_default_context()``
    (tests pass one trusting a local CA). Use inside one event loop; ``await close()`` at the
    end (or ``async with``). ``connections_opened`` counts every connection dialled.
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        allow_loopback: bool = False,
        own_origin: Origin | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limit: int = 512,
        limit_per_origin: int = 0,
        timeout: float = 15.0,
        keepalive: float = 15.0,
        dns_ttl: float = 10.0,
        body_cap: int = BODY_CAP,
    ) -> None:
        if limit < 1 or limit_per_origin < 0:
            raise ValueError("limit must be at least 1 and limit_per_origin at least 0")
        self.resolver = resolver
        self.allow_loopback = allow_loopback
        self.own_origin = own_origin  # the demo's own request inspector: dialled without the guard
        self.ssl_context = ssl_context
        self.limit = limit
        self.limit_per_origin = limit_per_origin
        self.timeout = timeout
        self.keepalive = keepalive
        self.dns_ttl = dns_ttl
        self.body_cap = body_cap
        self.connections_opened = 0
        self.closed = False
        self._loop_: asyncio.AbstractEventLoop | None = None
        self._total = 0  # connections open or being dialled
        self._per_origin: dict[Origin, int] = {}
        self._idle: dict[Key, list[_Connection]] = {}
        self._lru: dict[_Connection, None] = {}  # every idle connection, least recently used first
        self._live: set[_Connection] = set()
        self._waiters: list[tuple[Origin, asyncio.Future[None]]] = []
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self._resolving: dict[str, asyncio.Task[list[str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._deadlines: dict[int, tuple[asyncio.TimerHandle, dict[asyncio.Task[object], None]]] = {}
        self._expired: set[asyncio.Task[object]] = set()  # cancelled by their deadline

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_
        if loop is None:
            loop = self._loop_ = asyncio.get_running_loop()
        return loop

    async def __aenter__(self) -> Http1Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; requests still waiting for one fail with HttpError."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._live):
            conn.abort()  # no TLS close_notify dance: the HTTP framing already ended each response
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(HttpError("the HTTP pool is closed"))
        self._waiters.clear()
        for task in self._resolving.values():
            task.cancel()
        await asyncio.sleep(0)  # let the transports call connection_lost

    async def request(self, target: ParsedTarget, data: bytes, *, timeout: float | None = None) -> Response:
        """Send one pre-built request (:func:`encode_request`) to ``target``; its response.

        ``target`` comes from :func:`~signalmint.net.ssrf.check_url`; its host is
        resolved and vetted here, and only a vetted address is dialled.
        """
        if self.closed:
            raise HttpError("the HTTP pool is closed")
        seconds = self.timeout if timeout is None else timeout
        task = asyncio.current_task(self._loop)  # (the loop given: no get_running_loop per request)
        if task is None:  # (not inside a task: nothing to cancel on time)
            async with asyncio.timeout(seconds):
                return await self._request(target, data)
        slot = self._arm(task, seconds)
        try:
            conn = self._idle_for(target)
            if conn is None:  # no address cached, or no idle connection: look up, dial or wait
                return await self._request(target, data)
            try:  # the usual case, without a coroutine of its own: _request's work on an idle connection
                response = await conn.exchange(data)
            except ConnectionClosed as exc:
                self._discard(conn)
                if exc.response_started:
                    raise
                return await self._request(target, data, fresh=True)  # the idle-close race: once more, anew
            except BaseException:
                self._discard(conn)
                raise
            self._release(conn)
            return response
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() == 0:  # our deadline cancelled it, nothing else did
                    raise Timeout(f"no complete answer within {seconds:g} s") from None
            raise
        finally:
            self._disarm(task, slot)

    # -- deadlines --------------------------------------------------------------------------
    # asyncio.timeout() costs a timer per request (a libuv timer on uvloop); requests whose
    # deadlines fall in the same ``_GRAIN`` share one (a deadline fires at most that late).

    def _arm(self, task: asyncio.Task[object], seconds: float) -> int:
        slot = math.ceil((self._loop.time() + seconds) / _GRAIN)
        entry = self._deadlines.get(slot)
        if entry is None:
            entry = self._deadlines[slot] = (self._loop.call_at(slot * _GRAIN, self._expire, slot), {})
        entry[1][task] = None
        return slot

    def _disarm(self, task: asyncio.Task[object], slot: int) -> None:
        self._expired.discard(task)
        entry = self._deadlines.get(slot)
        if entry is not None:
            entry[1].pop(task, None)

    def _expire(self, slot: int) -> None:
        entry = self._deadlines.pop(slot, None)
        if entry is None:
            return
        for task in entry[1]:
            if not task.done():
                self._expired.add(task)
                task.cancel()

    def _idle_for(self, target: ParsedTarget) -> _Connection | None:
        """An idle connection to ``target``'s vetted addresses (cached), taken from the pool; None
        when the name is not cached or none is idle (:meth:`_request` then does the work)."""
        origin: Origin = (target.scheme, target.host, target.port)
        if origin == self.own_origin and target.ip is not None:
            ips = [target.ip]
        else:
            cached = self._dns.get(target.host)
            if cached is None or cached[0] <= self._loop.time():
                return None
            ips = cached[1]
        return self._take_idle(origin, ips)

    def _take_idle(self, origin: Origin, ips: list[str]) -> _Connection | None:
        """The most recently used idle connection to one of ``ips`` that is still usable."""
        now = self._loop.time()
        for ip in ips:
            idle = self._idle.get((*origin, ip))
            while idle:
                conn = idle.pop()
                del self._lru[conn]
                if conn.closed or now - conn.idle_since > self.keepalive:
                    self._discard(conn)
                    continue
                return conn
        return None

    async def _request(self, target: ParsedTarget, data: bytes, *, fresh: bool = False) -> Response:
        origin: Origin = (target.scheme, target.host, target.port)
        cached = self._dns.get(target.host)
        if origin == self.own_origin and target.ip is not None:
            ips = [target.ip]  # check_url let this through only as the demo's own inspector
        elif cached is not None and cached[0] > self._loop.time():
            ips = cached[1]
        else:
            ips = await self._resolve(target.host, target.port)
        while True:
            conn = await self._acquire(origin, ips, fresh)
            reused = conn.exchanges > 0
            try:
                response = await conn.exchange(data)
            except ConnectionClosed as exc:
                self._discard(conn)
                if reused and not fresh and not exc.response_started:
                    fresh = True  # the idle-close race: once more, on a new connection
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
            self._release(conn)
            return response

    # -- addresses ------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> list[str]:
        """Vetted addresses of ``host``: one lookup at a time per name, cached ``dns_ttl`` s."""
        task = self._resolving.get(host)
        if task is None:
            lookup = resolve_safe(host, port, resolver=self.resolver, allow_loopback=self.allow_loopback)
            task = self._resolving[host] = self._loop.create_task(lookup)
            task.add_done_callback(lambda done: self._resolved(host, done))
        return await asyncio.shield(task)

    def _resolved(self, host: str, task: asyncio.Task[list[str]]) -> None:
        if self._resolving.get(host) is task:
            del self._resolving[host]
        if task.cancelled() or task.exception() is not None:
            return  # refusals and failures are not cached
        if len(self._dns) >= 10_000:
            now = self._loop.time()
            self._dns = {h: hit for h, hit in self._dns.items() if hit[0] > now}
            if len(self._dns) >= 10_000:
                self._dns.clear()
        self._dns[host] = (self._loop.time() + self.dns_ttl, task.result())

    # -- connections ----------------------------------------------------------------------

    def _can_dial(self, origin: Origin) -> bool:
        if self.limit_per_origin and self._per_origin.get(origin, 0) >= self.limit_per_origin:
            return False
        return self._total < self.limit or bool(self._lru)

    async def _acquire(self, origin: Origin, ips: list[str], fresh: bool) -> _Connection:
        while True:
            if self.closed:
                raise HttpError("the HTTP pool is closed")
            if not fresh:
                conn = self._take_idle(origin, ips)
                if conn is not None:
                    return conn
            if self._can_dial(origin):
                if self._total >= self.limit:
                    self._discard(next(iter(self._lru)))  # make room: the least recently used idle one
                return await self._dial(origin, ips)
            entry = (origin, self._loop.create_future())
            self._waiters.append(entry)
            try:
                await entry[1]
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif entry[1].done() and not entry[1].cancelled() and entry[1].exception() is None:
                    self._wake(origin)  # woken but leaving: pass the turn on
                raise

    async def _dial(self, origin: Origin, ips: list[str]) -> _Connection:
        """A new connection to the first vetted address that answers (a slot is held meanwhile)."""
        scheme, host, port = origin
        self._total += 1
        self._per_origin[origin] = self._per_origin.get(origin, 0) + 1
        failure: HttpError | None = None
        try:
            for ip in ips:
                try:
                    conn = await self._connect((scheme, host, port, ip))
                except ConnectError as exc:
                    failure = exc
                    continue
                self.connections_opened += 1
                self._live.add(conn)
                return conn
            raise failure or ConnectError(f"{host} has no address to dial")
        except BaseException:
            self._release_slot(origin)
            raise

    async def _connect(self, key: Key) -> _Connection:
        scheme, host, port, ip = key
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._loop.sock_connect(sock, (ip, port))  # the vetted IP, never the name
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {ip} port {port}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        conn = _Connection(self, key)
        tls = None
        if scheme == "https":
            tls = self.ssl_context
            if tls is None:
                tls = self.ssl_context = ssl.create_default_context()
        try:
            await self._loop.create_connection(lambda: conn, sock=sock, ssl=tls, server_hostname=host if tls else None)
        except OSError as exc:  # ssl.SSLError (a certificate refused...) is an OSError
            sock.close()
            what = f"TLS with {host} ({ip} port {port})" if tls else f"connection to {ip} port {port}"
            raise ConnectError(f"{what} failed: {exc}") from None
        except BaseException:
            sock.close()
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        """Back to the idle pool if the connection can carry another request, else closed."""
        if not conn.reusable or conn.closed or self.closed:
            self._discard(conn)
            return
        conn.idle_since = self._loop.time()
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        idle.append(conn)
        self._lru[conn] = None
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.keepalive / 2, self._sweep)
        if self._waiters:
            self._wake(conn.origin)

    def _discard(self, conn: _Connection) -> None:
        if conn.reusable and conn.waiter is None:
            conn.close()  # a healthy idle connection: close it politely
        else:
            conn.abort()
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        """Drop ``conn`` from the idle pool and free its slot (once; connection_lost calls it too)."""
        if conn in self._lru:
            del self._lru[conn]
            self._idle[conn.key].remove(conn)
        if self._idle.get(conn.key) == []:
            del self._idle[conn.key]
        if conn.counted:
            conn.counted = False
            self._live.discard(conn)
            self._release_slot(conn.origin)

    def _release_slot(self, origin: Origin) -> None:
        self._total -= 1
        left = self._per_origin[origin] - 1
        if left:
            self._per_origin[origin] = left
        else:
            del self._per_origin[origin]
        if self._waiters:
            self._wake(origin)

    def _wake(self, origin: Origin) -> None:
        """Wake the first waiter for ``origin``, else the first one that may dial now."""
        chosen = next((i for i, (o, _) in enumerate(self._waiters) if o == origin), None)
        if chosen is None:
            chosen = next((i for i, (o, _) in enumerate(self._waiters) if self._can_dial(o)), None)
        if chosen is not None:
            _, waiter = self._waiters.pop(chosen)
            if not waiter.done():
                waiter.set_result(None)

    def _sweep(self) -> None:
        """Close connections idle for longer than ``keepalive`` (the oldest come first)."""
        self._sweeper = None
        deadline = self._loop.time() - self.keepalive
        while self._lru:
            conn = next(iter(self._lru))
            if conn.idle_since > deadline:
                break
            self._discard(conn)
        if self._lru and not self.closed:
            self._sweeper = self._loop.call_later(self.keepalive / 2, self._sweep)
