"""The HTTP/1.1 webhook client against real local servers, on asyncio's loop and on uvloop.

Most tests use :class:`RawServer`, a scripted server on 127.0.0.1 (real sockets, requests
parsed by httptools) that writes raw response bytes, so the edge cases (idle-close races,
chunked and HTTP/1.0 bodies, half-sent responses) are exact. The TLS tests use the uvicorn
sink with a trustme certificate from ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httptools
import pytest
import uvloop

from signalmint.delivery.http1 import (
    ConnectError,
    ConnectionClosed,
    Http1Pool,
    HttpError,
    ProtocolError,
    Timeout,
    encode_request,
    request_head,
)
from signalmint.net.ssrf import ParsedTarget, UnsafeTarget, check_url

from .conftest import TLS_HOSTNAME, HttpsSink, _free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Seen:
    """One request as the server parsed it."""

    connection: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    local_ip: str


@dataclass
class Answer:
    """What the server does with a request: write ``data`` after ``delay``, then maybe close."""

    data: bytes = OK
    close: bool = False
    delay: float = 0.0


class _RequestCollector:
    def __init__(self) -> None:
        self.done: list[tuple[str, dict[str, str], bytes]] = []
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self._url.decode(), self._headers, self._body))
        self._url, self._headers, self._body = b"", {}, b""


class RawServer:
    """A scripted HTTP/1.1 server on ``host``: ``answer(seen)`` decides each reply."""

    def __init__(self, answer: Callable[[Seen], Answer] = lambda seen: Answer(), *, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.host = host
        self.port = 0
        self.connections = 0
        self.requests: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self, port: int = 0) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> RawServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers)
        await self._server.wait_closed()

    def url(self, path: str = "/hook", *, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        local_ip = writer.get_extra_info("sockname")[0]
        collector = _RequestCollector()
        parser = httptools.HttpRequestParser(collector)
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
                while collector.done:
                    path, headers, body = collector.done.pop(0)
                    seen = Seen(index, parser.get_method().decode(), path, headers, body, local_ip)
                    self.requests.append(seen)
                    answer = self.answer(seen)
                    if answer.delay:
                        await asyncio.sleep(answer.delay)
                    writer.write(answer.data)
                    await writer.drain()
                    if answer.close:
                        return
        except (ConnectionError, RuntimeError, httptools.HttpParserError):  # uvloop: RuntimeError on a closed transport
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    """Run a coroutine on asyncio's loop, then (second parametrization) on uvloop."""

    def runner(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as r:
            return r.run(coroutine)

    yield runner


def post(target: ParsedTarget, body: bytes = b'{"n":1}', **headers: str) -> bytes:
    head = request_head(target, {"content-type": "application/json", "user-agent": "test/1"})
    return encode_request(head, {k.replace("_", "-"): v for k, v in headers.items()}, body)


async def send(pool: Http1Pool, url: str, body: bytes = b'{"n":1}', timeout: float | None = None) -> Any:
    target = check_url(url, allow_loopback=True)
    return await pool.request(target, post(target, body, webhook_id="msg_1"), timeout=timeout)


def stub(answers: dict[str, Sequence[str]]) -> tuple[list[str], Callable[[str], Awaitable[Sequence[str]]]]:
    asked: list[str] = []

    async def resolver(host: str) -> Sequence[str]:
        asked.append(host)
        return answers.get(host, [])

    return asked, resolver


# -- requests and keep-alive ------------------------------------------------------------


def test_request_bytes_and_keep_alive_reuse(run: Any) -> None:
    async def main() -> None:
        async with RawServer() as server, Http1Pool(allow_loopback=True) as pool:
            for _ in range(20):
                response = await send(pool, server.url("/hook?s=1"), b'{"n":1}')
                assert (response.status, response.body, response.truncated) == (200, b"ok", False)
            assert server.connections == 1 and pool.connections_opened == 1
            seen = server.requests[0]
            assert (seen.method, seen.path, seen.body) == ("POST", "/hook?s=1", b'{"n":1}')
            assert seen.headers == {
                "host": f"127.0.0.1:{server.port}",
                "content-type": "application/json",
                "user-agent": "test/1",
                "webhook-id": "msg_1",
                "content-length": "7",
            }

    run(main())


def test_connections_are_bounded_in_all_and_per_origin(run: Any) -> None:
    async def main() -> None:
        slow = RawServer(lambda seen: Answer(delay=0.05))
        async with slow as server:
            async with Http1Pool(allow_loopback=True, limit=3) as pool:
                await asyncio.gather(*(send(pool, server.url()) for _ in range(30)))
                assert server.connections == 3 and len(server.requests) == 30
            async with Http1Pool(allow_loopback=True, limit=10, limit_per_origin=2) as pool:
                await asyncio.gather(*(send(pool, server.url()) for _ in range(20)))
                assert server.connections == 3 + 2

    run(main())


def test_pool_evicts_idle_connections_of_other_origins_when_full(run: Any) -> None:
    async def main() -> None:
        async with RawServer() as one, RawServer() as two, Http1Pool(allow_loopback=True, limit=1) as pool:
            for _ in range(3):
                assert (await send(pool, one.url())).status == 200
                assert (await send(pool, two.url())).status == 200
            assert (one.connections, two.connections) == (3, 3)

    run(main())


def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(run: Any) -> None:
    """The idle-close race: the server drops a reused connection without answering."""

    def answer(seen: Seen) -> Answer:
        first_on_its_connection = sum(r.connection == seen.connection for r in server.requests) == 1
        return Answer() if first_on_its_connection else Answer(b"", close=True)

    server = RawServer(answer)

    async def main() -> None:
        async with server, Http1Pool(allow_loopback=True) as pool:
            assert (await send(pool, server.url())).status == 200
            assert (await send(pool, server.url())).status == 200  # retried on connection 2
            assert server.connections == 2 and len(server.requests) == 3

    run(main())


def test_idle_connection_closed_by_the_server_is_not_used(run: Any) -> None:
    async def main() -> None:
        async with RawServer(lambda seen: Answer(close=True)) as server, Http1Pool(allow_loopback=True) as pool:
            assert (await send(pool, server.url())).status == 200
            await asyncio.sleep(0.05)  # the client sees the FIN while idle
            assert (await send(pool, server.url())).status == 200
            assert server.connections == 2 and len(server.requests) == 2

    run(main())


def test_no_retry_once_the_response_started(run: Any) -> None:
    def answer(seen: Seen) -> Answer:
        if len(server.requests) == 1:
            return Answer()
        return Answer(b"HTTP/1.1 200 OK\r\ncontent-len", close=True)

    server = RawServer(answer)

    async def main() -> None:
        async with server, Http1Pool(allow_loopback=True) as pool:
            await send(pool, server.url())
            with pytest.raises(ConnectionClosed, match="in the middle of the response") as info:
                await send(pool, server.url())
            assert info.value.response_started
            assert server.connections == 1 and len(server.requests) == 2

    run(main())


def test_no_retry_on_a_fresh_connection(run: Any) -> None:
    async def main() -> None:
        async with RawServer(lambda seen: Answer(b"", close=True)) as server, Http1Pool(allow_loopback=True) as pool:
            with pytest.raises(ConnectionClosed, match="before answering"):
                await send(pool, server.url())
            assert server.connections == 1 and len(server.requests) == 1

    run(main())


# -- response framing -------------------------------------------------------------------


def test_connection_close_is_honoured_even_if_the_server_keeps_the_socket(run: Any) -> None:
    close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"

    async def main() -> None:
        async with RawServer(lambda seen: Answer(close)) as server, Http1Pool(allow_loopback=True) as pool:
            for _ in range(3):
                response = await send(pool, server.url())
                assert response.body == b"ok" and response.headers["connection"] == "close"
            assert server.connections == 3

    run(main())


def test_http_1_0_body_until_close(run: Any) -> None:
    async def main() -> None:
        reply = Answer(b"HTTP/1.0 202 Accepted\r\nx-a: 1\r\n\r\nread until the end", close=True)
        async with RawServer(lambda seen: reply) as server, Http1Pool(allow_loopback=True) as pool:
            for _ in range(2):
                response = await send(pool, server.url())
                assert (response.status, response.body, response.headers["x-a"]) == (202, b"read until the end", "1")
            assert server.connections == 2

    run(main())


def test_chunked_response_and_headers(run: Any) -> None:
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def main() -> None:
        async with RawServer(lambda seen: Answer(chunked)) as server, Http1Pool(allow_loopback=True) as pool:
            for _ in range(2):
                response = await send(pool, server.url())
                assert (response.status, response.body) == (503, b"hello world")
                assert response.headers["retry-after"] == "7"
            assert server.connections == 1

    run(main())


def test_interim_1xx_responses_are_skipped(run: Any) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"

    async def main() -> None:
        async with RawServer(lambda seen: Answer(interim)) as server, Http1Pool(allow_loopback=True) as pool:
            assert (await send(pool, server.url())).status == 201

    run(main())


def test_body_is_capped_and_the_connection_dropped(run: Any) -> None:
    big = b"HTTP/1.1 500 Oops\r\ncontent-length: 1048576\r\n\r\n" + b"x" * 1048576

    async def main() -> None:
        async with RawServer(lambda seen: Answer(big)) as server, Http1Pool(allow_loopback=True) as pool:
            for _ in range(2):
                response = await send(pool, server.url())
                assert response.status == 500 and response.truncated
                assert response.body == b"x" * 65536
            assert server.connections == 2

    run(main())


def test_invalid_response_is_a_protocol_error(run: Any) -> None:
    async def main() -> None:
        async with (
            RawServer(lambda seen: Answer(b"SMTP ready\r\n\r\n")) as server,
            Http1Pool(allow_loopback=True) as pool,
        ):
            with pytest.raises(ProtocolError, match="invalid HTTP response"):
                await send(pool, server.url())

    run(main())


def test_redirects_are_returned_not_followed(run: Any) -> None:
    moved = b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"

    async def main() -> None:
        async with RawServer(lambda seen: Answer(moved)) as server, Http1Pool(allow_loopback=True) as pool:
            response = await send(pool, server.url("/hook"))
            assert (response.status, response.headers["location"]) == (302, "/elsewhere")
            await asyncio.sleep(0.05)
            assert [r.path for r in server.requests] == ["/hook"]

    run(main())


# -- failures ---------------------------------------------------------------------------


def test_timeout_covers_the_exchange_and_drops_the_connection(run: Any) -> None:
    def answer(seen: Seen) -> Answer:
        return Answer(delay=1.0) if len(server.requests) == 1 else Answer()

    server = RawServer(answer)

    async def main() -> None:
        async with server, Http1Pool(allow_loopback=True) as pool:
            started = time.monotonic()
            with pytest.raises(Timeout, match=r"0\.2 s"):
                await send(pool, server.url(), timeout=0.2)
            assert time.monotonic() - started < 0.9
            assert (await send(pool, server.url())).status == 200
            assert server.connections == 2

    run(main())


def test_connection_refused(run: Any) -> None:
    async def main() -> None:
        async with Http1Pool(allow_loopback=True) as pool:
            with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1 port \d+"):
                await send(pool, f"http://127.0.0.1:{_free_port()}/hook")

    run(main())


def test_close_fails_requests_in_flight_and_waiting(run: Any) -> None:
    async def main() -> None:
        async with RawServer(lambda seen: Answer(delay=1)) as server:
            pool = Http1Pool(allow_loopback=True, limit=1)
            requests = [asyncio.create_task(send(pool, server.url())) for _ in range(2)]
            await asyncio.sleep(0.1)
            await pool.close()
            results = await asyncio.gather(*requests, return_exceptions=True)
            assert [type(r) for r in results] == [ConnectionClosed, HttpError]
            assert server.connections == 1
            with pytest.raises(HttpError, match="closed"):
                await send(pool, server.url())

    run(main())


def test_header_injection_is_refused() -> None:
    target = check_url("https://hooks.example.com/in")
    with pytest.raises(ValueError, match="cannot be sent"):
        request_head(target, {"x-a": "1\r\nx-injected: 1"})
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_request(request_head(target, {}), {"bad name": "1"}, b"")


# -- SSRF: what is dialled --------------------------------------------------------------


@pytest.fixture
def second_loopback() -> str:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not routed to loopback here")
    return "127.0.0.2"


def test_dials_only_the_vetted_address_and_keys_connections_by_it(run: Any, second_loopback: str) -> None:
    """Two servers on one port: the name's vetted answer decides which one is reached."""
    current = [second_loopback]
    asked: list[str] = []

    async def resolver(host: str) -> Sequence[str]:
        asked.append(host)
        return list(current)

    async def main() -> None:
        async with RawServer(host=second_loopback) as two:
            one = await RawServer(host="127.0.0.1").start(two.port)
            try:
                async with Http1Pool(allow_loopback=True, resolver=resolver, dns_ttl=60) as pool:
                    url = f"http://hooks.example.com:{two.port}/hook"
                    for _ in range(3):
                        await send(pool, url)
                    assert asked == ["hooks.example.com"]  # cached for dns_ttl
                    assert [r.local_ip for r in two.requests] == [second_loopback] * 3 and one.requests == []
                    assert two.requests[0].headers["host"] == f"hooks.example.com:{two.port}"
                async with Http1Pool(allow_loopback=True, resolver=resolver, dns_ttl=0) as pool:
                    await send(pool, url)
                    current[:] = ["127.0.0.1"]
                    await send(pool, url)  # the name now answers 127.0.0.1: a new connection, there
                    assert len(asked) == 3
                    assert [r.local_ip for r in one.requests] == ["127.0.0.1"]
                    assert (two.connections, one.connections) == (2, 1)
            finally:
                await one.__aexit__()

    run(main())


@pytest.mark.parametrize("answer", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::ffff:127.0.0.1"])
def test_refused_answers_are_never_dialled(run: Any, answer: str) -> None:
    _, resolver = stub({"hooks.example.com": ["93.184.215.14", answer]})

    async def main() -> None:
        async with RawServer() as server, Http1Pool(resolver=resolver) as pool:
            target = check_url(f"https://hooks.example.com:{server.port}/hook")
            with pytest.raises(UnsafeTarget):
                await pool.request(target, post(target))
            assert server.connections == 0

    run(main())


def test_proxy_environment_is_ignored(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with RawServer() as proxy, RawServer() as server, Http1Pool(allow_loopback=True) as pool:
            for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
                monkeypatch.setenv(name, proxy.url("/"))
            await send(pool, server.url())
            assert (proxy.connections, len(server.requests)) == (0, 1)

    run(main())


# -- TLS --------------------------------------------------------------------------------


def test_tls_verifies_the_name_while_dialling_the_vetted_ip(run: Any, https_sink: HttpsSink) -> None:
    asked, resolver = stub({TLS_HOSTNAME: ["127.0.0.1"], "other.example": ["127.0.0.1"]})

    async def main() -> None:
        async with Http1Pool(allow_loopback=True, resolver=resolver, ssl_context=https_sink.client_ssl()) as pool:
            for _ in range(3):
                assert (await send(pool, https_sink.url("/hook"))).status == 200
            assert pool.connections_opened == 1
            with pytest.raises(ConnectError, match=r"(?i)certificate"):
                await send(pool, https_sink.url("/hook", host="other.example"))
        async with Http1Pool(allow_loopback=True, resolver=resolver) as pool:  # the system's trust store
            with pytest.raises(ConnectError, match=r"(?i)certificate verify failed"):
                await send(pool, https_sink.url("/hook"))

    run(main())
    assert [r.headers["host"] for r in https_sink.requests] == [f"{TLS_HOSTNAME}:{https_sink.port}"] * 3
    assert asked == [TLS_HOSTNAME, "other.example", TLS_HOSTNAME]
