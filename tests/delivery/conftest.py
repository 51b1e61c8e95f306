"""Local HTTP sinks for channel tests: real uvicorn servers on 127.0.0.1, no mocks.

A sink records every request and answers from a scripted plan: ``sink.script(Reply(503,
{"retry-after": "7"}), Reply(200))`` answers the next two requests so, then ``sink.default``.
``Reply.delay`` stalls before answering (for timeouts). Servers start once per session and
are reset for each test; ``https_sink`` serves TLS with a certificate from a local CA
(trustme) for ``hooks.example``, trusted by ``https_sink.client_ssl()``.

    def test_x(http_sink):
        http_sink.script(Reply(500))
        ... post to http_sink.url("/hook") ...
        assert http_sink.requests[0].json() == {...}
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvicorn

from signalmint.testing import ChannelSink

TLS_HOSTNAME = "hooks.example"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, headers, body, and a delay (seconds) before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the sink received it (header names lowercased; last value wins)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink:
    """An ASGI app that records requests and answers per a scripted plan."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.default = Reply()
        self._plan: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.port = 0
        self.scheme = "http"
        self.host = "127.0.0.1"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._plan.clear()
            self.default = Reply()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, then with ``default``."""
        with self._lock:
            self._plan.extend(replies)

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Block until ``count`` requests arrived (for senders that return before the sink records)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            time.sleep(0.01)
        return self.requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self.requests.append(
                Recorded(
                    method=scope["method"],
                    path=scope["path"],
                    query=scope["query_string"].decode("latin-1"),
                    headers=headers,
                    body=body,
                    at=time.time(),
                )
            )
            reply = self._plan.popleft() if self._plan else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        raw_headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": reply.body})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SinkServer:
    """Serve an app with uvicorn in a daemon thread on 127.0.0.1, optionally over TLS."""

    def __init__(self, app: Any, *, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self.server = uvicorn.Server(config)  # off the main thread, uvicorn leaves signals alone
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> SinkServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sink server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class HttpsSink(HttpSink):
    """A sink over TLS; its certificate names ``hooks.example`` (and 127.0.0.1)."""

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__()
        self.ca = ca
        self.scheme = "https"
        self.host = TLS_HOSTNAME

    def client_ssl(self) -> ssl.SSLContext:
        """A client context that verifies certificates against the sink's CA only."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode())
        return ctx


@pytest.fixture(scope="session")
def _http_sink_server() -> Iterator[HttpSink]:
    sink = HttpSink()
    with SinkServer(sink) as server:
        sink.port = server.port
        yield sink


@pytest.fixture
def http_sink(_http_sink_server: HttpSink) -> Iterator[HttpSink]:
    """A plain-HTTP sink on 127.0.0.1, reset for this test."""
    _http_sink_server.reset()
    yield _http_sink_server
    _http_sink_server.reset()


@pytest.fixture(scope="session")
def _https_sink_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsSink]:
    ca = trustme.CA()
    cert = ca.issue_cert(TLS_HOSTNAME, "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    sink = HttpsSink(ca)
    with SinkServer(sink, certfile=str(certfile), keyfile=str(keyfile)) as server:
        sink.port = server.port
        yield sink


@pytest.fixture
def https_sink(_https_sink_server: HttpsSink) -> Iterator[HttpsSink]:
    """A TLS sink on 127.0.0.1 whose certificate names ``hooks.example``, reset for this test."""
    _https_sink_server.reset()
    yield _https_sink_server
    _https_sink_server.reset()


# -- the sinks of the channel conformance suite ---------------------------------------------

_BOT_OK = b'{"ok": true, "result": {"message_id": 1}}'  # what the Telegram sink answers (webhooks ignore it)


class _Smtp:
    """An aiosmtpd handler that records messages and answers with the code it is told."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.answer = ""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answer:
            return self.answer
        self.received.append(bytes(envelope.content))
        return "250 2.0.0 queued"


@pytest.fixture(scope="session")
def channel_sink() -> Iterator[ChannelSink]:
    """Local HTTP and SMTP sinks for :func:`signalmint.testing.check_channel` (any channel, plugins too)."""
    from aiosmtpd.controller import Controller

    from signalmint.config import EmailConfig
    from signalmint.delivery.channels.base import ChannelContext

    http, smtp = HttpSink(), _Smtp()
    http.default = Reply(body=_BOT_OK)
    port = _free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=port)
    controller.start()

    def reply(status: int) -> None:
        http.default = Reply(status=status, body=_BOT_OK if status < 300 else b'{"ok": false, "description": "no"}')
        smtp.answer = "" if status < 300 else ("451 4.3.0 try later" if status == 503 else "550 5.1.1 no such user")

    def context(sink: ChannelSink) -> ChannelContext:
        return ChannelContext(
            allow_loopback=True,
            smtp=EmailConfig(host="127.0.0.1", port=sink.smtp_port, starttls=False, sender="alerts@sm.example"),
            telegram_token="123456:BOT-token",
            telegram_base_url=sink.http_url,
        )

    try:
        with SinkServer(http) as server:
            http.port = server.port
            yield ChannelSink(
                http_url=f"http://127.0.0.1:{server.port}",
                smtp_host="127.0.0.1",
                smtp_port=port,
                closed_port=_free_port(),
                reply=reply,
                received=lambda: [r.body + repr(r.headers).encode() for r in http.requests] + smtp.received,
                make_context=context,
            )
    finally:
        controller.stop()
