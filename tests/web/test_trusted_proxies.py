"""Throttles key on the real client: X-Forwarded-For counts only from ``web.trusted_proxies``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from signalmint.config import WebConfig, parse_settings
from signalmint.errors import ConfigError
from signalmint.registry import Registry
from signalmint.serve.web import web_config
from signalmint.store import Database

from ..conftest import free_port
from .test_account_pages import csrf_of, make_app

# The sign-in form's throttle (10 tries per address, then one per 30 s) is the one the admin
# password form uses; the e-mail form is cheap to try where a password check costs ~0.5 s.
FORM = {"email": "nobody@example.com"}


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn exactly as ``signalmint run`` configures it, in a thread."""
    config = web_config(app, app.state.ctx.settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def sign_in_tries(http: httpx.Client | TestClient, forwarded: list[str]) -> list[int]:
    token = csrf_of(http.get("/login").text)
    return [
        http.post("/login", data={**FORM, "csrf": token}, headers={"X-Forwarded-For": hop}).status_code
        for hop in forwarded
    ]


def test_the_served_app_ignores_forwarded_for_from_anyone(sqlite_db: Database) -> None:
    """The probe: 10 tries, then more, each naming another address; all are throttled."""
    app = make_app(sqlite_db, web=WebConfig(port=free_port()))
    with served(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        statuses = sign_in_tries(http, [f"198.51.100.{i}" for i in range(14)])
    assert statuses == [200] * 10 + [429] * 4


def test_a_trusted_proxy_names_the_client(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, web=WebConfig(trusted_proxies=["10.0.0.0/8", "::1"]))
    with TestClient(app, client=("10.1.2.3", 4000)) as proxy:
        # One client behind the proxy, who also writes addresses of their own to the left.
        spoofed = [f"6.6.6.{i}, 198.51.100.7" for i in range(12)]
        assert sign_in_tries(proxy, spoofed) == [200] * 10 + [429] * 2
        # Other clients behind the same proxy have their own allowance.
        assert sign_in_tries(proxy, ["198.51.100.8", "198.51.100.9, 10.9.9.9"]) == [200, 200]


def test_an_untrusted_peer_cannot_name_itself(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, web=WebConfig(trusted_proxies=["10.0.0.0/8"]))
    with TestClient(app, client=("203.0.113.5", 4000)) as direct:
        assert sign_in_tries(direct, [f"10.0.0.{i}" for i in range(12)]) == [200] * 10 + [429] * 2


def test_the_public_api_limit_uses_the_same_address(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, web=WebConfig(public_rate_per_second=0.001, public_burst=2))
    with TestClient(app, client=("127.0.0.1", 4000)) as client:
        statuses = [
            client.get("/api/v1/signals", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)
        ]
    assert statuses == [200, 200, 429, 429]


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "proxy.internal", ""])
def test_trusted_proxies_must_be_addresses_or_networks(registry: Registry, entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(f"web:\n  trusted_proxies: ['{entry}']\n", registry=registry)
    assert "web.trusted_proxies" in str(caught.value) and "CIDR" in str(caught.value)
