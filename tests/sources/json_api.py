"""A real local JSON API over HTTP: a paginated GitHub-like list of repositories with stars.

``pages`` are the answers of ``/repos?page=N``; each carries ``next`` (the next page's
path) until the last. ``etag`` turns conditional GET on; ``fail`` answers that many
requests with ``fail_status`` (500) first, with ``retry_after`` if set. Every request's
path and headers are kept in ``requests``, and its arrival (monotonic seconds) in
``arrivals``. ``last_modified`` turns on ``Last-Modified``/``If-Modified-Since``;
``redirects`` maps a path to a ``Location`` answered with a 302.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class JsonApi:
    def __init__(self, pages: list[list[dict[str, Any]]] | None = None) -> None:
        self.pages = pages or [[{"full_name": "a/one", "stargazers_count": 10}]]
        self.etag: str | None = None
        self.fail = 0
        self.fail_status = 500
        self.retry_after: str | None = None
        self.last_modified: str | None = None
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.arrivals: list[float] = []
        self.url = ""
        self.lock = threading.Lock()

    def set_stars(self, stars: dict[str, int]) -> None:
        with self.lock:
            for page in self.pages:
                for row in page:
                    if row.get("full_name") in stars:
                        row["stargazers_count"] = stars[row["full_name"]]

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append((path, headers))
            self.arrivals.append(time.monotonic())
            if path in self.redirects:
                return 302, {"Location": self.redirects[path]}, b""
            if self.fail > 0:
                self.fail -= 1
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return self.fail_status, headers, b'{"message": "try later"}'
            if self.etag is not None and headers.get("If-None-Match") == self.etag:
                return 304, {"ETag": self.etag}, b""
            if self.last_modified is not None and headers.get("If-Modified-Since") == self.last_modified:
                return 304, {"Last-Modified": self.last_modified}, b""
            query = parse_qs(urlsplit(path).query)
            page = int((query.get("page") or query.get("cursor") or ["1"])[0])
            rows = self.pages[page - 1] if 1 <= page <= len(self.pages) else []
            body: dict[str, Any] = {"items": rows}
            if page < len(self.pages):
                body["next"] = f"/repos?page={page + 1}"
                body["cursor"] = str(page + 1)
            out = {"Content-Type": "application/json"}
            if self.etag is not None:
                out["ETag"] = self.etag
            if self.last_modified is not None:
                out["Last-Modified"] = self.last_modified
            return 200, out, json.dumps(body).encode()


@contextmanager
def serve(api: JsonApi) -> Iterator[JsonApi]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = api.answer(self.path, dict(self.headers.items()))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
