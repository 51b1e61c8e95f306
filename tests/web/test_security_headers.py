"""Security headers on every answer, and a Content-Security-Policy that allows what the pages use."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Protocol
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from signalmint.records import Signal
from signalmint.store import Database, append_signals

from .test_account_pages import AUTOMATION, client_for, make_app, plans, sign_up

PATHS = ["/", "/admin/login", "/dashboard", "/signals/1", "/api/v1/signals", "/docs"]


@pytest.fixture
def app(sqlite_db: Database) -> FastAPI:
    app = make_app(sqlite_db, automations=[AUTOMATION], plans=plans(["us-stocks"]))
    signal = Signal("us-stocks", "AAPL", datetime(2024, 3, 1, 14, 30, tzinfo=UTC), "volume_spike", 7.0, {"ratio": 8.0})
    sqlite_db.write_sync(append_signals, "us-stocks", [signal], datetime.now(UTC))
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        sign_up(c, app, "ann@example.com", "pro")  # /dashboard renders; pro reads the API (premium gets 403)
        yield c


def policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


class Answered(Protocol):
    """An HTTP response of either client (the test client and httpx are separate packages)."""

    @property
    def headers(self) -> Mapping[str, str]: ...


def assert_guarded(response: Answered, path: str) -> dict[str, list[str]]:
    headers = response.headers
    assert "content-security-policy" in headers, f"{path}: no CSP"
    csp = policy(headers["content-security-policy"])
    assert csp["frame-ancestors"] == ["'none'"], path
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], path
    assert headers["x-frame-options"] == "DENY", path
    assert headers["x-content-type-options"] == "nosniff", path
    assert "camera=()" in headers["permissions-policy"] and "geolocation=()" in headers["permissions-policy"], path
    assert headers["referrer-policy"] in {"no-referrer", "strict-origin-when-cross-origin"}, path
    assert "strict-transport-security" not in headers, f"{path}: HSTS on plain http"
    return csp


def test_every_listed_path_carries_the_headers(client: TestClient) -> None:
    for path in PATHS:
        response = client.get(path, headers={"accept": "text/html"})
        assert response.status_code == 200, f"{path}: {response.status_code}"
        assert_guarded(response, path)


def test_errors_redirects_and_static_files_carry_them_too(client: TestClient, app: FastAPI) -> None:
    for path in ("/signals/999999", "/api/v1/signals/999999", "/static/app.css", "/healthz"):
        assert_guarded(client.get(path), path)
    with client_for(app) as visitor:
        assert_guarded(visitor.get("/dashboard"), "/dashboard (redirect)")
    too_big = client.post("/api/v1/me/keys", content=b"x" * 70_000, headers={"origin": "http://testserver"})
    assert too_big.status_code == 413
    assert_guarded(too_big, "413")


class Assets(HTMLParser):
    """What a page loads or runs: scripts (external and inline), stylesheets, images, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.inline: list[str] = []
        self.styles: list[str] = []
        self.images: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            if found.get("src"):
                self.scripts.append(found["src"] or "")
            else:
                self._in_script = True
                self.inline.append("")
        elif tag == "link" and "stylesheet" in (found.get("rel") or ""):
            self.styles.append(found.get("href") or "")
        elif tag == "link" and "icon" in (found.get("rel") or ""):
            self.images.append(found.get("href") or "")
        elif tag == "img":
            self.images.append(found.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline[-1] += data


def allowed(url: str, sources: list[str]) -> bool:
    parts = urlsplit(url)
    if not parts.scheme:  # relative: this origin
        return "'self'" in sources
    if parts.scheme == "data":
        return "data:" in sources
    return f"{parts.scheme}://{parts.netloc}" in sources


def test_the_policy_allows_what_each_page_uses(client: TestClient) -> None:
    for path in [*PATHS[:-2], "/automations/us-stocks", "/signup", "/dashboard/billing", "/docs"]:
        _check_page(client, path)


def _check_page(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code}"
    csp = assert_guarded(response, path)
    page = Assets()
    page.feed(response.text)
    assert not page.handlers, f"{path}: inline event handlers {page.handlers} would be blocked"
    for src in page.scripts:
        assert allowed(src, csp["script-src"]), f"{path}: script {src} not allowed by {csp['script-src']}"
    for body in page.inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"], f"{path}: an inline script is not allowed"
    for href in page.styles:
        assert allowed(href, csp["style-src"]), f"{path}: stylesheet {href} not allowed"
    for src in page.images:
        assert allowed(src, csp.get("img-src", csp["default-src"])), f"{path}: image {src} not allowed"
    if 'style="' in response.text:
        assert "'unsafe-inline'" in csp["style-src"], f"{path}: style attributes would be blocked"
    stream = re.search(r'data-stream-url="([^"]+)"', response.text)
    if stream:
        assert allowed(stream.group(1), csp["connect-src"])
    assert csp["script-src"] == ["'self'"] and not page.inline, f"{path}: pages run only their own files"


def test_docs_run_under_the_page_policy(client: TestClient) -> None:
    """Swagger UI is served from the package with no inline script, so /docs needs no exception."""
    docs = policy(client.get("/docs").headers["content-security-policy"])
    page = policy(client.get("/").headers["content-security-policy"])
    assert docs == page and docs["script-src"] == ["'self'"]


def test_a_route_with_its_own_policy_may_be_framed_by_it(sqlite_db: Database) -> None:
    """The demo mail catcher's HTML body sets frame-ancestors 'self'; no blanket DENY overrides it."""
    from starlette.responses import Response
    from starlette.types import Message

    from signalmint.config import Settings
    from signalmint.web.security import _merge, security_headers

    framed = Response("x", headers={"Content-Security-Policy": "sandbox; frame-ancestors 'self'"})
    start: Message = {"type": "http.response.start", "status": 200, "headers": list(framed.raw_headers)}
    _merge(start, security_headers(Settings()))
    names = [k for k, _ in start["headers"]]
    assert names.count(b"content-security-policy") == 1 and b"x-frame-options" not in names
    assert b"x-content-type-options" in names


def test_hsts_when_the_site_is_https(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, base_url="https://alerts.example.com")
    with TestClient(app, base_url="https://testserver") as client:
        for path in ("/", "/api/v1/signals", "/docs"):
            assert client.get(path).headers["strict-transport-security"] == "max-age=31536000", path


def test_a_routes_own_referrer_policy_wins(client: TestClient) -> None:
    response = client.get("/dashboard")
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert (
        response.headers.get_list("content-security-policy") and len(response.headers.get_list("x-frame-options")) == 1
    )
