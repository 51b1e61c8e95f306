"""Every registered plugin, built-in or not, passes its kind's conformance suite."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from signalmint.errors import ConfigError
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources.ccxt_candles import CcxtCandles
from signalmint.testing import ChannelSink, check_channel, detector_checks, source_checks
from signalmint.testing.detectors import check_declares_needs
from signalmint.testing.exchange import StandInBinance
from signalmint.testing.sources import check_rows_match_schema
from tests.test_columns import Items, ItemsOptions

from ..delivery.conftest import channel_sink  # noqa: F401  (a fixture)
from ..sources.alpaca_server import AlpacaServer, alpaca_server, conformance_tape
from ..sources.evm_node import Node, start_node
from ..sources.json_api import JsonApi, serve
from ..sources.moving_site import moving_site

REGISTRY = Registry.from_entry_points()


def _csv(tmp: Path) -> str:
    rng = np.random.default_rng(1)
    rows = []
    for t in range(60):
        for key in ("A", "B", "C"):
            rows.append(
                {
                    "symbol": key,
                    "time": f"2024-01-02T14:{t:02d}:00Z",
                    "open": 10.0,
                    "high": 11.0,
                    "low": 9.0,
                    "close": 10.5,
                    "volume": float(rng.lognormal(5, 0.2)),
                }
            )
    path = tmp / "bars.csv"
    pl.DataFrame(rows).write_csv(path)
    return str(path)


@pytest.fixture(scope="module")
def exchange() -> Iterator[StandInBinance]:
    """A stand-in Binance on the real clock, for the ``ccxt`` source (60 candles backfilled)."""
    with StandInBinance(["AAA/USDT", "BBB/USDT", "CCC/USDT"]) as ex:
        yield ex


@pytest.fixture(scope="module")
def evm_chain() -> Iterator[Node]:
    """A local ganache with 80 blocks, for the ``evm`` source (skipped when ganache is missing)."""
    node = start_node()
    try:
        node.mine(80)
        yield node
    finally:
        node.stop()
        node.http.close()


@pytest.fixture(scope="module")
def json_api() -> Iterator[JsonApi]:
    """A local paginated JSON API, for the ``http_json`` source."""
    with serve(JsonApi([[{"full_name": "a/one", "stargazers_count": 1}], [{"full_name": "b/two"}]])) as api:
        yield api


PUSH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _pushed(source: Any) -> Any:
    """A push source with 60 requests already queued, as the ingest route queues them."""
    for i in range(60):
        body = {"points": [{"key": k, "time": f"2026-01-02T10:{i:02d}:00Z", "metrics": {"value": i}} for k in "ab"]}
        assert source.offer(source.parse(json.dumps(body).encode(), datetime(2026, 1, 2, tzinfo=UTC)))
    return source


#: Options that make each built-in source quick to test (from a tmp dir and the stand-in
#: exchange's URL). A new entry point must be added here.
SOURCE_OPTIONS: dict[str, Any] = {
    "synthetic": lambda tmp, url: {"symbols": 30, "interval": 0.001, "warmup": 40},
    "bokeh_stocks": lambda tmp, url: {"pace": 0.0},
    "file": lambda tmp, url: {"path": _csv(tmp)},
    "ccxt": lambda tmp, url: {
        "exchange": "binance",
        "symbols": ["AAA/USDT", "BBB/USDT"],
        "urls": {"public": url},
        "warmup": 60,
        "rate_limit": 0,
    },
    "evm": lambda tmp, url: {"rpc_url": url, "confirmations": 0, "warmup": 70, "interval": 0.05, "host_interval": 0},
    "http_json": lambda tmp, url: {
        "url": f"{url}/repos",
        "items": "items",
        "key": "full_name",
        "metrics": {"stars": "stargazers_count"},
        "texts": {"name": "full_name"},
        "next": "next",
        "interval": 0.001,
        "host_interval": 0,
        "allow_private": True,
    },
    "push": lambda tmp, url: {"secret": PUSH_SECRET, "metrics": ["value"], "texts": ["note"], "queue": 100},
    "alpaca": lambda tmp, url: {"symbols": ["AAPL", "MSFT", "SPY"], "warmup": 40},  # + the local server's addresses
    "rss": lambda tmp, url: {"urls": [f"{url}/feed.xml"], "interval": 0.001, "host_interval": 0, "allow_private": True},
    "web_page": lambda tmp, url: {
        "urls": [f"{url}/shop/kettle", f"{url}/shop/grinder"],
        "interval": 0.001,
        "host_interval": 0,
        "allow_private": True,
        "text_selector": "#desc",
    },
}
#: Sources served by the local site whose feed and pages change on every request.
ON_MOVING_SITE = {"rss", "web_page"}
DETECTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "anomaly": {"column": "volume", "warmup": 20},
    "volume_spike": {"window": 10},
    "threshold": {"column": "close", "level": 50.0, "hysteresis": 0.2},
    "pct_move": {"column": "volume", "pct": 200.0, "window": 5},
    "price_drop": {"column": "price", "pct": 20.0},
    "restock": {"column": "in_stock"},
    "change": {"column": "text", "min_ratio": 0.01},
    "new_item": {"announce_existing": True},
    "ranking": {"column": "close", "top": 3, "interval": "5m"},
}


def test_every_plugin_is_covered() -> None:
    assert set(REGISTRY.sources) == set(SOURCE_OPTIONS)
    assert set(REGISTRY.detectors) == set(DETECTOR_OPTIONS)


@pytest.mark.parametrize("kind", sorted(DETECTOR_OPTIONS))
@pytest.mark.parametrize("check", list(detector_checks()), ids=lambda c: c.__name__)
def test_detector_conformance(kind: str, check: Any) -> None:
    check(lambda: REGISTRY.build("detector", kind, DETECTOR_OPTIONS[kind]))


@pytest.mark.parametrize("kind", sorted(SOURCE_OPTIONS))
@pytest.mark.parametrize("check", list(source_checks()), ids=lambda c: c.__name__)
def test_source_conformance(kind: str, check: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("exchange").url if kind == "ccxt" else ""  # a stand-in Binance for ccxt
    if kind in ON_MOVING_SITE:
        url = request.getfixturevalue(moving_site.__name__).url
    if kind == "evm":  # a real local node
        url = request.getfixturevalue(evm_chain.__name__).url
    if kind == "http_json":
        url = request.getfixturevalue("json_api").url
    options = SOURCE_OPTIONS[kind](tmp_path, url)
    if kind == "alpaca":  # a local Alpaca-shaped REST + websocket server, keys in the environment
        server: AlpacaServer = request.getfixturevalue(alpaca_server.__name__)
        conformance_tape(server, options["symbols"])
        options |= {"data_url": server.data_url, "stream_url": server.stream_url}
    if kind == "push":  # what external systems pushed, queued by the ingest route
        check(lambda: _pushed(REGISTRY.build("source", kind, options)))
        return
    check(lambda: REGISTRY.build("source", kind, options))


class FastClock:
    """The real clock running ``speed`` times faster (seconds since the epoch), with its sleep."""

    def __init__(self, speed: float) -> None:
        self.speed, self.origin, self.started = speed, time.time(), time.monotonic()

    def __call__(self) -> float:
        return self.origin + (time.monotonic() - self.started) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


@pytest.fixture(scope="module")
def fast_exchange() -> Iterator[tuple[StandInBinance, Registry]]:
    """A stand-in Binance on a clock three times faster than the real one, and a registry whose
    ``ccxt`` source (the registered class, options validated as usual) runs on that clock too."""
    clock = FastClock(3.0)

    class FastCcxt(CcxtCandles):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, clock=clock, sleep=clock.sleep)

    registry = Registry.from_entry_points()
    assert registry.get("source", "ccxt") is CcxtCandles  # the registered class, run on the fast clock
    registry.sources["ccxt"] = FastCcxt
    with StandInBinance(["AAA/USDT", "BBB/USDT", "CCC/USDT"], clock=clock) as ex:
        yield ex, registry


#: ``ccxt`` over its websocket (ccxt.pro) rather than polling: one-second candles, so the suite's
#: 50 frames are 47 backfilled over REST and the last ones pushed by the stand-in's kline
#: websocket within about three (virtual) seconds, one of real time on the fast clock (REST asks
#: only for a candle the stream is ``delay`` late with: the seam at the start).
CCXT_WEBSOCKET_WARMUP = 47


@pytest.mark.parametrize("check", list(source_checks()), ids=lambda c: c.__name__)
def test_ccxt_websocket_mode_passes_the_source_suite(
    check: Any, fast_exchange: tuple[StandInBinance, Registry]
) -> None:
    exchange, registry = fast_exchange
    options = {
        "exchange": "binance",
        "symbols": ["AAA/USDT", "BBB/USDT", "CCC/USDT"],
        "timeframe": "1s",
        "urls": {"public": exchange.url, "ws": {"spot": exchange.ws_url}},
        "stream": "websocket",
        "warmup": CCXT_WEBSOCKET_WARMUP,
        "delay": 1.0,
        "grace": 0.5,
        "rate_limit": 0,
    }
    built: list[Any] = []

    def factory() -> Any:
        source = registry.build("source", "ccxt", options)
        built.append(source)
        return source

    sent = exchange.ws_messages
    check(factory)
    assert all(source.websocket for source in built)  # not a fallback to polling
    if check.__name__ in ("check_rows_match_schema", "check_ticks_are_valid_bars"):  # 50 frames: 3+ pushed
        assert exchange.ws_messages > sent


# -- the suites themselves: a non-bar source passes, a source breaking its schema fails ----


def test_a_text_source_passes_the_source_suite_without_bar_rules() -> None:
    for check in source_checks():
        check(lambda: Items(items=30))


class _Liar:
    """Declares a text title but gives numbers."""

    kind = "liar"
    Options = ItemsOptions
    schema = {"title": "text"}

    def __init__(self, items: int = 3) -> None:
        self.items = items
        self.rejected: dict[str, int] = {}

    async def stream(self, since: Any = None) -> Any:
        yield Frame(
            keys=np.array(["a"]),
            times=np.array(["2024-01-02T09:30"], dtype="datetime64[ns]"),
            columns={"title": np.array([1.0])},
        )


def test_a_source_not_giving_its_declared_columns_fails_the_suite() -> None:
    with pytest.raises(AssertionError, match="declared text column 'title' is missing"):
        check_rows_match_schema(_Liar)


def test_a_detector_declaring_an_unknown_column_kind_fails_the_suite() -> None:
    class Odd:
        kind = "odd"
        Options = ItemsOptions
        needs = {"price": "number"}

    with pytest.raises(ConfigError, match="number"):
        check_declares_needs(Odd)


# -- channels: every registered one, against a local HTTP sink and a local SMTP server ----------


@pytest.mark.parametrize("kind", sorted(REGISTRY.channels))
def test_every_channel_passes_the_conformance_suite(kind: str, request: pytest.FixtureRequest) -> None:
    check_channel(REGISTRY.get("channel", kind), request.getfixturevalue("channel_sink"))


def test_a_channel_that_leaks_its_secret_fails_the_suite(request: pytest.FixtureRequest) -> None:
    sink: ChannelSink = request.getfixturevalue("channel_sink")
    from signalmint.delivery.channels.webhook import WebhookChannel

    class Leaky(WebhookChannel):
        def to_url(self, redact: bool = True) -> str:
            return super().to_url(redact=False)

    with pytest.raises(AssertionError, match="shows the secret"):
        check_channel(Leaky, sink)
