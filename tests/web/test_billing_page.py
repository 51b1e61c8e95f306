"""The Plan and billing page and the header read as a product: each plan once, as pricing cards.

The layout itself was checked by eye in headless Chromium at 1280×800 and 390×844; these tests
pin the markup and style rules that layout rests on, so a regression shows here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from signalmint.store import Database

from .test_account_pages import client_for, make_app, sign_up


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def plans_section(client: TestClient, app: FastAPI) -> str:
    sign_up(client, app, "ann@example.com", "free")
    page = client.get("/dashboard/billing")
    assert page.status_code == 200
    found = re.search(r'<section[^>]*id="plans".*?</section>', page.text, flags=re.S)
    assert found is not None
    return found.group(0)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_billing_page_lists_each_plan_once_as_pricing_cards(client: TestClient, app: FastAPI) -> None:
    section = plans_section(client, app)
    words = text_of(section).split()
    for name in ("Free", "Premium", "Pro"):
        assert words.count(name) == 1, (name, text_of(section))
    assert '<div class="pricing">' in section  # the grid that lays the cards side by side
    assert len(re.findall(r'class="card plan-card', section)) == 3
    beside = r'<div class="plan-top">\s*<h3[^>]*>Free</h3>\s*<span class="badge badge-brand">Your plan</span>'
    badge = re.search(beside, section)
    assert badge is not None, section  # beside the name, not a full-width row
    assert re.search(r"<button[^>]*>Get Premium</button>", section) is None  # trial plans say so
    assert re.search(r"<button[^>]*>Start the 7-day trial</button>", section) is not None


def test_the_credits_card_has_a_padded_body(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    page = client.get("/dashboard/billing").text
    credits = re.search(r'<section[^>]*id="credits".*?</section>', page, flags=re.S)
    assert credits is not None
    assert re.search(r'</div>\s*<div class="card-body">\s*<p>Balance:', credits.group(0)) is not None


def test_the_header_keeps_pricing_and_sign_in_on_a_phone(client: TestClient) -> None:
    page = client.get("/pricing").text
    nav = re.search(r'<nav class="nav".*?</nav>', page, flags=re.S)
    assert nav is not None
    pricing = re.search(r'<a[^>]*href="/pricing"[^>]*>Pricing</a>', nav.group(0))
    assert pricing is not None and "hide-sm" not in pricing.group(0)
    css = (resources.files("signalmint.web") / "static" / "app.css").read_text()
    nav_rule = re.search(r"\.nav a \{[^}]*\}", css)
    assert nav_rule is not None and "white-space: nowrap" in nav_rule.group(0)  # never "Sign / in"
