"""Frames beyond OHLCV: sources declare columns, detectors their needs, `check` matches them,
and text columns reach the signal's payload and the store."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from signalmint.cli import app
from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings, parse_settings
from signalmint.detectors.volume_spike import VolumeSpike
from signalmint.engine.runner import Engine
from signalmint.errors import ConfigError
from signalmint.pipeline import signals_from_scores
from signalmint.records import Frame, Schema, Scores, to_datetime64
from signalmint.registry import Registry, declared, missing_columns
from signalmint.sources.synthetic import SyntheticMarket
from signalmint.store import Database, list_signals

START = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)


class ItemsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = 3


class Items:
    """A feed of items (no bars): a title and url per item, a price, new items each tick."""

    kind: ClassVar[str] = "items"
    Options: ClassVar[type[BaseModel]] = ItemsOptions
    schema: ClassVar[Schema] = {"title": "text", "url": "text", "price": "metric"}

    def __init__(self, items: int = 3) -> None:
        self.items = items
        self._rejected: Counter[str] = Counter()

    @property
    def rejected(self) -> Mapping[str, int]:
        return self._rejected

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        for tick in range(self.items):
            time = START + timedelta(minutes=tick)
            if since is not None and time <= since:
                continue
            yield Frame(
                keys=np.array([f"item-{tick}"]),
                times=np.array([to_datetime64(time)]),
                columns={"price": np.array([10.0 + tick])},
                texts={
                    "title": np.array([f"Item number {tick}"], dtype=object),
                    "url": np.array([f"https://shop.test/{tick}"], dtype=object),
                },
            )


class NeedsTitleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = "title"


class NeedsTitle:
    """Flags every row; copies the text column into the payload."""

    kind: ClassVar[str] = "needs_title"
    Options: ClassVar[type[BaseModel]] = NeedsTitleOptions

    def __init__(self, field: str = "title") -> None:
        self.field = field

    @classmethod
    def needs(cls, options: NeedsTitleOptions) -> Schema:
        return {options.field: "text", "url": "text"}

    def update(self, frame: Frame) -> Scores:
        n = len(frame)
        return Scores(
            frame.keys,
            frame.times,
            np.ones(n),
            np.ones(n, dtype=bool),
            {"price": frame.columns["price"]},
            {"title": frame.texts[self.field], "url": frame.texts["url"]},
        )


@pytest.fixture
def plugins() -> Registry:
    return Registry(
        sources={"items": Items, "synthetic": SyntheticMarket},
        detectors={"needs_title": NeedsTitle, "volume_spike": VolumeSpike},
    )


CONFIG = """\
database: sqlite:///x.db
automations:
  - name: shop
    source:
      kind: {source}
    detector:
      kind: {detector}
{extra}"""


def config(source: str, detector: str, extra: str = "") -> str:
    return CONFIG.format(source=source, detector=detector, extra=extra)


def test_declarations_read_class_attributes_and_methods() -> None:
    assert declared(Items) == {"title": "text", "url": "text", "price": "metric"}
    assert declared(SyntheticMarket) == dict.fromkeys(("open", "high", "low", "close", "volume"), "bar")
    assert declared(NeedsTitle, {"field": "name"}) == {"name": "text", "url": "text"}
    assert declared(VolumeSpike, {"volume_column": "qty"}) == {"qty": "metric"}


def test_a_bar_column_serves_a_metric_need_but_not_a_text_need() -> None:
    assert missing_columns({"volume": "bar"}, {"volume": "metric"}) == []
    assert missing_columns({"volume": "bar"}, {"volume": "text"}) != []


def test_check_accepts_a_pipeline_whose_needs_are_met(plugins: Registry) -> None:
    parse_settings(config("items", "needs_title"), file="cfg.yaml", registry=plugins, env={})
    parse_settings(config("synthetic", "volume_spike"), file="cfg.yaml", registry=plugins, env={})


def test_check_refuses_a_missing_text_column_at_the_option_naming_it(plugins: Registry) -> None:
    text = config("items", "needs_title", "      field: body\n")
    with pytest.raises(ConfigError) as info:
        parse_settings(text, file="cfg.yaml", registry=plugins, env={})
    error = info.value
    assert (error.file, error.line, error.key) == ("cfg.yaml", 8, "automations[0].detector.field")
    assert "text column 'body'" in error.message and "title, url, price" in error.message


def test_check_refuses_a_fixed_need_at_the_detector_kind(plugins: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(config("synthetic", "needs_title"), file="cfg.yaml", registry=plugins, env={})
    error = info.value
    assert (error.line, error.key) == (7, "automations[0].detector.kind")
    assert "needs the text column 'title'" in str(error)


def test_check_refuses_volume_spike_on_a_source_without_volume(plugins: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(config("items", "volume_spike"), file="cfg.yaml", registry=plugins, env={})
    assert info.value.key == "automations[0].detector.kind"
    assert "metric column 'volume'" in str(info.value)


def test_text_columns_reach_the_payload() -> None:
    frame = next(iter(_frames()))
    signals = signals_from_scores("shop", "needs_title", NeedsTitle().update(frame))
    assert signals[0].payload == {"price": 10.0, "title": "Item number 0", "url": "https://shop.test/0"}


def _frames() -> list[Frame]:
    async def take() -> list[Frame]:
        return [f async for f in Items().stream()]

    return asyncio.run(take())


def test_the_engine_stores_signals_of_a_text_source_with_their_text(db: Database, plugins: Registry) -> None:
    settings = Settings(
        database="sqlite://",
        automations=[
            AutomationConfig(
                name="shop",
                source=PluginConfig(kind="items", items=3),
                detector=DetectorConfig(kind="needs_title"),
                retention=None,
            )
        ],
    )

    async def run() -> None:
        engine = Engine(settings, db, plugins)
        await engine.start()
        await asyncio.wait_for(engine.wait(), timeout=30)
        await engine.stop()
        assert engine.statuses()[0].last_error is None

    asyncio.run(run())
    signals = sorted(db.read_sync(list_signals, automation="shop", limit=10), key=lambda s: s.seq)
    assert [(s.key, s.payload["title"], s.payload["url"]) for s in signals] == [
        (f"item-{i}", f"Item number {i}", f"https://shop.test/{i}") for i in range(3)
    ]


def test_signalmint_check_refuses_a_detector_reading_a_column_the_source_lacks(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(
        "automations:\n  - name: drops\n    source: {kind: synthetic}\n    detector:\n      kind: price_drop\n"
        "      pct: 10\n      column: price\n"
    )
    result = CliRunner().invoke(app, ["check", "-c", str(path)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"{path}:7: automations[0].detector.column: detector price_drop needs the metric column 'price'" in text
    assert "open, high, low, close, volume" in text and "Traceback" not in text
    path.write_text(path.read_text().replace("column: price", "column: close"))
    assert CliRunner().invoke(app, ["check", "-c", str(path)]).exit_code == 0


def test_messages_show_text_payloads_instead_of_dashes() -> None:
    from signalmint.delivery.render import signal_text

    doc = {
        "id": 1,
        "automation": "feed",
        "key": "e1",
        "time": "2024-01-02T09:00:00+00:00",
        "kind": "new_item",
        "score": 1.0,
        "payload": {"matched": ["rust"], "title": "Rust <in> the kernel", "url": "https://news.test/e1"},
    }
    rendered = signal_text(doc, "Feed", base_url="http://x")
    text = rendered.text
    assert re.search(r"Title +Rust <in> the kernel", text) and re.search(r"Url +https://news.test/e1", text)
    assert re.search(r"Matched +rust", text)
    assert "Rust &lt;in&gt; the kernel" in rendered.html


def test_the_signal_page_of_a_text_signal_lists_its_payload(db: Database) -> None:
    from fastapi.testclient import TestClient

    from signalmint.records import Automation, Signal
    from signalmint.store import append_signals, sync_automations
    from signalmint.web.app import create_app

    now = datetime.now(UTC)
    db.write_sync(sync_automations, [Automation("pages", "Pages", "", "web_page", "change", {})], now)
    payload = {"difference": 0.25, "diff": "--- before\n+++ after\n-<b>old</b>\n+new", "url": "https://shop.test/a"}
    signal = Signal(automation="pages", key="a", time=START, kind="change", score=0.25, payload=payload)
    [stored] = db.write_sync(append_signals, "pages", [signal], now)
    with TestClient(create_app(Settings(database=db.url), db)) as client:
        page = client.get(f"/signals/{stored.id}")
    assert page.status_code == 200
    assert "https://shop.test/a" in page.text and "Difference" in page.text
    assert '<pre class="mono diff demo-text">--- before\n+++ after\n-&lt;b&gt;old&lt;/b&gt;\n+new</pre>' in page.text
    assert "Usual volume" not in page.text
    # no bars were ever stored for a page's text: say so, rather than blame the retention setting
    assert "There is no chart for this kind of data" in page.text and "removed by" not in page.text
    assert '<h2 id="chart-title">Chart</h2>' in page.text
