"""The ``web_page`` source against a real local HTTP server serving shop pages."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings, parse_settings
from signalmint.engine.runner import Engine
from signalmint.errors import ConfigError
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources.shop import Product, extract
from signalmint.sources.web_page import WebPage, WebPageOptions
from signalmint.store import Database
from tests.conftest import first_signals

from .web_server import Reply, Site, VirtualTime, run_until


def json_ld_page(price: str = "19.99", availability: str = "InStock") -> str:
    """A Shopify-shaped page: an @graph with the shop, breadcrumbs and the product's variant offers."""
    graph = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "Organization", "name": "Kitchen Things", "url": "https://kitchen.example.com"},
            {"@type": "BreadcrumbList", "itemListElement": [{"@type": "ListItem", "position": 1, "name": "Kettles"}]},
            {
                "@type": "Product",
                "name": "Stovetop kettle 1.5 l",
                "sku": "KT-15",
                "offers": [
                    {
                        "@type": "Offer",
                        "price": "44.00",
                        "priceCurrency": "EUR",
                        "availability": "https://schema.org/OutOfStock",
                    },
                    {
                        "@type": "Offer",
                        "price": price,
                        "priceCurrency": "EUR",
                        "availability": f"https://schema.org/{availability}",
                    },
                ],
            },
        ],
    }
    return f"""<!doctype html><html><head><title>Stovetop kettle | Kitchen Things</title>
<meta property="og:title" content="Stovetop kettle">
<script type="application/ld+json">{{"@context": "https://schema.org", "@type": "WebSite", "name": "Kitchen"}}
</script>
<script type="application/ld+json">{json.dumps(graph)}</script></head>
<body><nav><a href="/">Home</a></nav><h1 class="product-title">Stovetop kettle</h1>
<span class="price">99.00 €</span><div id="details"><p>Enamelled steel.</p><p>Whistles.</p></div></body></html>"""


MICRODATA_PAGE = """<!doctype html><html><head><title>Espresso grinder - Beans & Co</title></head><body>
<div itemscope itemtype="https://schema.org/Product">
  <h1 itemprop="name">Espresso grinder</h1>
  <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
    <meta itemprop="priceCurrency" content="EUR"><span itemprop="price" content="249.00">249,00 €</span>
    <link itemprop="availability" href="https://schema.org/OutOfStock"> Sold out
  </div>
  <div id="details">Conical burrs.</div>
</div></body></html>"""

SELECTOR_PAGE = """<!doctype html><html><head><title>Desk lamp</title></head><body>
<h1 class="product-title">Desk lamp "Arc"</h1><div class="buy"><span class="price">1.299,00 €</span>
<button id="add-to-cart">Add to cart</button></div>
<div id="details"><p>Warm light,   dimmable.</p></div></body></html>"""

SOLD_OUT_PAGE = SELECTOR_PAGE.replace('<button id="add-to-cart">Add to cart</button>', "<p>Sold out</p>")
NOTHING_PAGE = "<html><body><h1>Page not found</h1><p>Try our search.</p></body></html>"
CSS = {"price": ".buy .price", "in_stock": "#add-to-cart", "title": "h1.product-title"}


def source(urls: list[str], time: VirtualTime, **options: Any) -> WebPage:
    settings: dict[str, Any] = {"interval": 3600, "host_interval": 0, "allow_private": True} | options
    validated = WebPageOptions.model_validate({"urls": urls, **settings})
    return WebPage(**validated.model_dump(), clock=time.clock, sleep=time.sleep)


def rows(frames: list[Frame]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for frame in frames:
        for i, key in enumerate(frame.keys.tolist()):
            values = {name: float(frame.columns[name][i]) for name in frame.columns}
            out[key] = values | {name: frame.texts[name][i] for name in frame.texts}
    return out


def html(body: str, **kw: Any) -> Reply:
    return Reply(body, content_type="text/html", **kw)


def test_json_ld_then_microdata_then_selectors_give_price_availability_and_text() -> None:
    async def main() -> tuple[list[Frame], list[Frame], str]:
        time = VirtualTime()
        async with Site(time) as site:
            urls = [
                site.serve("/kettle", html(json_ld_page())),
                site.serve("/grinder", html(MICRODATA_PAGE)),
                site.serve("/lamp", html(SELECTOR_PAGE)),
            ]
            css = source(urls, time, selectors=CSS, text_selector="#details")
            by_css = await run_until(css, time, lambda frames: len(frames) >= 1)
            time.stopped.clear()
            xpath = {"price": "//div[@class='buy']/span", "in_stock": "//button[@id='add-to-cart']", "title": "//h1"}
            xp = source(urls[2:], time, selectors=xpath, text_selector="//div[@id='details']")
            by_xpath = await run_until(xp, time, lambda frames: len(frames) >= 1)
            return by_css, by_xpath, site.base

    by_css, by_xpath, base = asyncio.run(main())
    assert len(by_css) == 1 and len(by_xpath) == 1
    got = rows(by_css)
    kettle = got[f"{base}/kettle"]  # the JSON-LD offer in stock, not the page's .price nor the sold-out variant
    assert (kettle["price"], kettle["in_stock"], kettle["title"]) == (19.99, 1.0, "Stovetop kettle 1.5 l")
    assert kettle["url"] == f"{base}/kettle" and kettle["text"] == "Enamelled steel. Whistles."
    grinder = got[f"{base}/grinder"]
    assert (grinder["price"], grinder["in_stock"], grinder["title"]) == (249.0, 0.0, "Espresso grinder")
    lamp = got[f"{base}/lamp"]
    assert (lamp["price"], lamp["in_stock"], lamp["title"]) == (1299.0, 1.0, 'Desk lamp "Arc"')
    assert lamp["text"] == "Warm light, dimmable."
    assert rows(by_xpath)[f"{base}/lamp"] == lamp
    assert by_css[0].times[0] == by_css[0].times[-1]  # one poll, one time


def test_extraction_edge_cases() -> None:
    aggregate = {
        "@context": "http://schema.org/",
        "@type": ["Product"],
        "name": "Tent",
        "offers": {"@type": "AggregateOffer", "lowPrice": 120, "highPrice": 180, "availability": "InStock"},
    }
    broken_then_good = (
        '<script type="application/ld+json">{"@type": "Product", "name": </script>'
        f'<script type="application/ld+json">{json.dumps(aggregate)}</script>'
    )
    assert extract(broken_then_good) == Product(price=120.0, in_stock=1.0, title="Tent")
    group = {
        "@type": "ProductGroup",
        "name": "Shirt",
        "hasVariant": [
            {"@type": "Product", "offers": {"price": 30, "availability": "https://schema.org/SoldOut"}},
            {"@type": "Product", "offers": {"price": 25, "availability": "https://schema.org/SoldOut"}},
        ],
    }
    shirt = extract(f'<script type="application/ld+json">{json.dumps(group)}</script>')
    assert (shirt.price, shirt.in_stock, shirt.title) == (25.0, 0.0, "Shirt")  # none in stock: the cheapest
    sold = extract(SOLD_OUT_PAGE, CSS)
    assert (sold.price, sold.in_stock) == (1299.0, 0.0)  # no "Add to cart": out of stock
    worded = extract('<b class="s">Currently unavailable</b><i class="p">$5</i>', {"in_stock": ".s", "price": ".p"})
    assert (worded.price, worded.in_stock) == (5.0, 0.0)
    nothing = extract(NOTHING_PAGE)
    assert nothing.empty and math.isnan(nothing.price)


def test_a_304_and_an_unchanged_page_yield_nothing_and_a_price_change_yields_a_row() -> None:
    async def main() -> tuple[list[Frame], Site]:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve(
                "/kettle",
                html(json_ld_page("19.99"), etag='"a"'),
                html(json_ld_page("19.99"), etag='"a"'),  # If-None-Match matches: 304
                html(json_ld_page("19.99"), etag='"b"'),  # a new ETag, the same bytes: no row
                html(json_ld_page("17.49"), etag='"c"'),
            )
            frames = await run_until(source([url], time), time, lambda frames: len(site.requests) >= 4)
            return frames, site

    frames, site = asyncio.run(main())
    assert [h.headers.get("If-None-Match") for h in site.requests] == [None, '"a"', '"a"', '"b"']
    assert [float(f.columns["price"][0]) for f in frames] == [19.99, 17.49]


def test_a_500_then_recovery_with_backoff_and_a_malformed_page_counted() -> None:
    async def main() -> tuple[list[Frame], WebPage, VirtualTime]:
        time = VirtualTime()
        async with Site(time) as site:
            flaky = site.serve("/kettle", html("", status=500), html(json_ld_page()))
            broken = site.serve("/gone", html(NOTHING_PAGE))
            page = source([flaky, broken], time, backoff=0.5)
            return await run_until(page, time, lambda frames: len(frames) >= 1), page, time

    frames, page, time = asyncio.run(main())
    assert page.rejected == {"http_error": 1, "malformed": 1}
    assert 0.5 in time.sleeps
    assert len(frames) == 1 and frames[0].keys.tolist() == [frames[0].texts["url"][0]]
    assert frames[0].keys[0].endswith("/kettle")


def test_the_default_user_agent_names_signalmint_and_bad_options_are_refused() -> None:
    async def main() -> Site:
        time = VirtualTime()
        async with Site(time) as site:
            url = site.serve("/kettle", html(json_ld_page()))
            await run_until(source([url], time), time, lambda frames: len(frames) >= 1)
            return site

    site = asyncio.run(main())
    assert site.requests[0].headers["User-Agent"].startswith("signalmint/")
    with pytest.raises(ValidationError, match="neither valid CSS nor XPath"):
        WebPageOptions(urls=["https://shop.example.com/p"], selectors={"price": "div[[["})
    with pytest.raises(ValidationError, match="private address"):
        WebPageOptions(urls=["https://shop.example.com/p", "http://192.168.1.1/admin"])


def test_check_refuses_a_private_url_at_its_line() -> None:
    text = """database: sqlite:///x.db
automations:
  - name: shop
    source:
      kind: web_page
      urls:
        - https://shop.example.com/p/1
        - http://10.0.0.8/admin
    detector:
      kind: price_drop
      pct: 10
"""
    registry = Registry.from_entry_points()
    with pytest.raises(ConfigError) as info:
        parse_settings(text, file="cfg.yaml", registry=registry, env={})
    assert (info.value.line, info.value.key) == (6, "automations[0].source.urls")
    assert "10.0.0.8 is a private address" in info.value.message
    parse_settings(
        text.replace("urls:", "allow_private: true\n      urls:"), registry=Registry.from_entry_points(), env={}
    )


# -- through the engine: web_page + price_drop -------------------------------------------------


def test_a_web_page_automation_fires_when_the_served_price_drops(db: Database) -> None:
    async def main() -> list[Any]:
        async with Site() as site:
            url = site.serve(
                "/kettle",
                html(json_ld_page("40.00"), etag='"1"'),
                html(json_ld_page("39.00"), etag='"2"'),  # -2.5 %: recorded, no signal
                html(json_ld_page("29.00"), etag='"3"'),
            )
            settings = Settings(
                database="sqlite://",
                automations=[
                    AutomationConfig(
                        name="kettle-deals",
                        source=PluginConfig(
                            kind="web_page", urls=[url], interval="20ms", host_interval=0, allow_private=True
                        ),
                        detector=DetectorConfig(kind="price_drop", pct=10, include=["title", "url"]),
                        retention=None,
                    )
                ],
            )
            engine = Engine(settings, db, Registry.from_entry_points())
            await engine.start()
            try:
                found = await first_signals(db, "kettle-deals")
            finally:
                await engine.stop()
            assert engine.statuses()[0].last_error is None
            return found

    signals = asyncio.run(main())
    assert len(signals) == 1
    payload = signals[0].payload
    assert (payload["price"], payload["previous"]) == (29.0, 39.0)
    assert payload["title"] == "Stovetop kettle 1.5 l" and payload["url"].endswith("/kettle")
