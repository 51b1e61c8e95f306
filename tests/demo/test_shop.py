"""The demo's local shop and news feed: real HTTP on 127.0.0.1, a deterministic cycle, parsed by the real sources."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import feedparser  # type: ignore[import-untyped]
import httpx
import pytest

from signalmint.demo.seed import demo_settings
from signalmint.demo.shop import KEYWORDS, LocalShop
from signalmint.sources.shop import extract


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shop() -> Iterator[tuple[LocalShop, Clock]]:
    clock = Clock()
    local = LocalShop(speed=1.0, clock=clock)
    local.start()
    yield local, clock
    local.close()


def test_every_product_drops_its_price_and_flips_its_stock_within_a_cycle(shop: tuple[LocalShop, Clock]) -> None:
    local, clock = shop
    assert all(20 <= p.cycle <= 40 for p in local.products)
    with httpx.Client() as http:  # one client (and connection) for the ~150 pages
        for product, url in zip(local.products, local.product_urls, strict=True):
            seen = []
            for second in range(0, 41, 2):
                clock.now = float(second)
                page = extract(http.get(url).text)  # the web_page source's own parser
                seen.append((page.price, page.in_stock))
                assert page.title == product.title
            prices = [price for price, _ in seen]
            assert any(b is not None and a is not None and b <= a * 0.85 for a, b in itertools.pairwise(prices)), prices
            stock = [in_stock for _, in_stock in seen]
            assert 0.0 in stock and 1.0 in stock  # sold out, then back
        assert http.get(local.base_url + "/nope").status_code == 404


def test_the_cycle_is_the_same_on_every_run() -> None:
    one, two = LocalShop(seed=7), LocalShop(seed=7)
    assert one.products == two.products
    assert [one.offer(p, at=13.0) for p in one.products] == [two.offer(p, at=13.0) for p in two.products]


def test_the_feed_gains_an_item_every_twenty_seconds_half_of_them_matching(shop: tuple[LocalShop, Clock]) -> None:
    local, clock = shop
    first = feedparser.parse(httpx.get(local.feed_url).content)
    assert len(first.entries) == 3 and not first.bozo
    clock.now = 80.0
    later = feedparser.parse(httpx.get(local.feed_url).content)
    new = [e for e in later.entries if e.id not in {x.id for x in first.entries}]
    assert len(new) == 4
    matching = [e for e in new if any(k in e.title.lower() for k in KEYWORDS)]
    assert len(matching) == 2
    assert later.entries[0].published_parsed >= later.entries[-1].published_parsed  # newest first


def test_the_demo_reads_its_shop_and_feed_as_two_more_businesses(shop: tuple[LocalShop, Clock]) -> None:
    local, _ = shop
    settings = demo_settings("sqlite://", shop=local)
    by_name = {a.name: a for a in settings.automations}
    assert set(by_name) == {"us-stocks-volume", "synthetic-volume", "shop-price-drop", "news-keyword"}
    shop_source = by_name["shop-price-drop"].source.model_dump()
    assert shop_source["kind"] == "web_page" and shop_source["urls"] == local.product_urls
    assert shop_source["allow_private"] is True  # only the demo's own loopback server
    assert by_name["news-keyword"].detector.model_dump()["match"] == KEYWORDS
    assert {a.name for a in demo_settings("sqlite://").automations} == {"us-stocks-volume", "synthetic-volume"}


def test_a_reader_gone_mid_answer_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A source stopping with the demo drops its connection while the shop answers: the shop
    says nothing (the demo's log must stay free of tracebacks); other errors still print."""
    local = LocalShop()
    local.start()
    try:
        server = local._server
        assert server is not None
        for gone in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "Connection reset by peer")):
            try:
                raise gone
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a bug in a page")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a bug in a page" in capsys.readouterr().err
        assert httpx.get(local.product_urls[0]).status_code == 200  # still serving
    finally:
        local.close()
