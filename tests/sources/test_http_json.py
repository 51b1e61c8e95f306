"""The ``http_json`` source against a real local JSON API (tests/sources/json_api.py)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings, parse_settings
from signalmint.engine.runner import Engine
from signalmint.errors import ConfigError
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources.http_json import HttpJson, HttpJsonOptions, next_run
from signalmint.store import Database, list_signals
from tests.conftest import first_signals

from .json_api import JsonApi, serve

PAGES = [
    [{"full_name": "a/one", "stargazers_count": 10}, {"full_name": "a/two", "stargazers_count": 20}],
    [{"full_name": "b/three", "stargazers_count": 30}],
    [{"full_name": "c/four", "stargazers_count": 40, "description": "four"}],
]


class Clock:
    """Virtual time: ``sleep`` advances it at once and records how long it was asked to wait."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []
        self.hook: Any = None  # called at each sleep (the test changes the world between polls)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.hook is not None:
            self.hook()
        await asyncio.sleep(0)


@pytest.fixture
def api() -> Iterator[JsonApi]:
    with serve(JsonApi([[dict(r) for r in page] for page in PAGES])) as running:
        yield running


def source(api: JsonApi, clock: Clock, **options: Any) -> HttpJson:
    base: dict[str, Any] = {
        "url": f"{api.url}/repos",
        "items": "items",
        "key": "full_name",
        "metrics": {"stars": "stargazers_count"},
        "next": "next",
        "interval": "1m",
        "host_interval": 0.001,
        "allow_private": True,
    }
    validated = HttpJsonOptions.model_validate(base | options)
    return HttpJson(**validated.model_dump(), clock=clock, sleep=clock.sleep)


async def take(src: HttpJson, count: int, since: datetime | None = None) -> list[Frame]:
    frames: list[Frame] = []
    stream = src.stream(since)
    try:
        while len(frames) < count:
            frames.append(await asyncio.wait_for(anext(stream), timeout=10))
    finally:
        await stream.aclose()
    return frames


def test_every_page_is_followed_and_rows_are_mapped(api: JsonApi) -> None:
    clock = Clock()
    (frame,) = asyncio.run(take(source(api, clock, texts={"about": "description"}), 1))
    assert frame.keys.tolist() == ["a/one", "a/two", "b/three", "c/four"]
    assert frame.columns["stars"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert frame.texts["about"].tolist() == [None, None, None, "four"]
    assert (frame.times == np.datetime64(1_800_000_000, "s")).all()  # the poll time (when it started)
    assert [path for path, _ in api.requests] == ["/repos", "/repos?page=2", "/repos?page=3"]


def test_a_cursor_goes_into_the_query_and_the_page_cap_holds(api: JsonApi) -> None:
    (frame,) = asyncio.run(take(source(api, Clock(), next="cursor", max_pages=2), 1))
    assert frame.keys.tolist() == ["a/one", "a/two", "b/three"]
    assert [path for path, _ in api.requests] == ["/repos", "/repos?cursor=2"]


def test_an_unchanged_answer_304_gives_no_rows(api: JsonApi) -> None:
    api.etag = '"v1"'
    clock = Clock()
    src = source(api, clock, next=None)

    def after_poll() -> None:  # the API changes once polls 2 and 3 were answered 304
        if src.polls == 3:
            api.etag = '"v2"'
            api.set_stars({"a/one": 11})

    clock.hook = after_poll
    frames = asyncio.run(take(src, 2))
    assert frames[1].columns["stars"].tolist() == [11.0, 20.0]
    assert src.polls == 4 and len(api.requests) == 4
    sent = [headers.get("If-None-Match") for _, headers in api.requests]
    assert sent == [None, '"v1"', '"v1"', '"v1"']
    assert frames[1].times[0] - frames[0].times[0] == np.timedelta64(180, "s")  # polls 2 and 3 gave no frame


def test_a_failing_api_is_retried_with_backoff_and_recovers(api: JsonApi) -> None:
    api.fail = 2
    clock = Clock()
    src = source(api, clock, next=None, backoff=2.0)
    (frame,) = asyncio.run(take(src, 1))
    assert frame.keys.tolist() == ["a/one", "a/two"]
    assert clock.slept == [2.0, 4.0]  # backoff doubles, in virtual time
    assert dict(src.rejected) == {"http_error": 2}


def test_a_429_waits_its_retry_after(api: JsonApi) -> None:
    api.fail, api.fail_status, api.retry_after = 1, 429, "30"
    clock = Clock()
    src = source(api, clock, next=None, backoff=1.0)
    (frame,) = asyncio.run(take(src, 1))
    assert len(frame) == 2
    assert clock.slept == [30.0]
    assert dict(src.rejected) == {"rate_limited": 1}


def test_requests_to_one_host_are_spaced_by_the_host_interval(api: JsonApi) -> None:
    clock = Clock()
    src = source(api, clock, host_interval=0.5)  # three pages, at most two requests a second
    (frame,) = asyncio.run(take(src, 1))
    assert len(frame) == 4
    assert clock.slept == [pytest.approx(0.5), pytest.approx(0.5)]


def test_a_poll_given_up_waits_for_the_next_one(api: JsonApi) -> None:
    api.fail = 3
    clock = Clock()
    src = source(api, clock, next=None, retries=1, backoff=1.0)
    (frame,) = asyncio.run(take(src, 1))
    assert len(frame) == 2
    assert dict(src.rejected) == {"http_error": 3, "poll_failed": 1}
    assert clock.slept[0] == 1.0 and clock.slept[1] == pytest.approx(59.0)  # then the next poll, a minute on


def test_bad_rows_are_counted_by_reason(api: JsonApi) -> None:
    api.pages = [
        [
            {"full_name": "ok/one", "stargazers_count": 5, "at": "2026-03-01T10:00:00Z"},
            {"stargazers_count": 5, "at": "2026-03-01T10:00:00Z"},
            {"full_name": "bad/stars", "stargazers_count": "lots", "at": "2026-03-01T10:00:00Z"},
            {"full_name": "bad/time", "stargazers_count": 5, "at": "yesterday"},
            {"full_name": "naive", "stargazers_count": 5, "at": "2026-03-01T10:00:00"},
            {"full_name": "missing/stars", "stargazers_count": None, "at": 1772359200},
            {"full_name": "ok/one", "stargazers_count": 6, "at": "2026-03-01T10:00:00Z"},
        ]
    ]
    src = source(api, Clock(), next=None, time="at")
    (frame,) = asyncio.run(take(src, 1))
    assert frame.keys.tolist() == ["ok/one", "missing/stars"]
    assert np.isnan(frame.columns["stars"][1])  # null is missing, kept
    assert frame.times[1] == np.datetime64("2026-03-01T10:00:00", "ns")
    assert dict(src.rejected) == {
        "missing_key": 1,
        "non_numeric": 1,
        "bad_time": 1,
        "naive_timestamp": 1,
        "duplicate": 1,
    }


def test_headers_come_from_the_environment_with_a_user_agent(api: JsonApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "s3cret-token")
    src = source(
        api,
        Clock(),
        next=None,
        headers={"Authorization": "Bearer ${GH_TOKEN}"},
        user_agent="signalmint/0.1 (+https://alerts.example.com)",
    )
    asyncio.run(take(src, 1))
    _, headers = api.requests[0]
    assert headers["Authorization"] == "Bearer s3cret-token"
    assert "https://alerts.example.com" in headers["User-Agent"]
    assert "s3cret" not in repr(src.headers)  # the secret is read at request time, not kept in options


def test_urls_go_through_the_ssrf_guard() -> None:
    base = {"key": "k", "metrics": {"v": "v"}}
    for url in ("http://127.0.0.1:9/x", "https://10.0.0.8/x", "https://169.254.169.254/latest"):
        with pytest.raises(ValidationError):
            HttpJsonOptions.model_validate(base | {"url": url})
    HttpJsonOptions.model_validate(base | {"url": "http://127.0.0.1:8080/x", "allow_private": True})
    with pytest.raises(ValidationError, match="interval or cron"):
        HttpJsonOptions.model_validate(base | {"url": "https://api.example.com", "interval": "1m", "cron": "* * * * *"})
    with pytest.raises(ValidationError, match="JMESPath"):
        HttpJsonOptions.model_validate(base | {"url": "https://api.example.com", "key": "a[["})


def test_a_next_page_pointing_inward_is_refused(api: JsonApi) -> None:
    api.pages = [[{"full_name": "a/one", "stargazers_count": 1}], []]
    src = source(api, Clock(), next="'https://10.0.0.8/steal'", allow_private=True)
    (frame,) = asyncio.run(take(src, 1))
    assert len(frame) == 1 and src.rejected["http_error"] == 1
    assert len(api.requests) == 1


def test_cron_keeps_the_local_wall_time_across_daylight_saving() -> None:
    zone = "America/New_York"
    first = next_run("0 9 * * *", zone, datetime(2026, 3, 7, 12, tzinfo=UTC))
    second = next_run("0 9 * * *", zone, first)
    third = next_run("0 9 * * *", zone, second)
    assert first == datetime(2026, 3, 7, 14, tzinfo=UTC)  # EST, UTC-5
    assert second == datetime(2026, 3, 8, 13, tzinfo=UTC)  # EDT from 2026-03-08 02:00, UTC-4
    assert third - second == timedelta(days=1)
    # 02:30 does not exist on the spring-forward day: that day's run is skipped or moved, never twice
    runs = [datetime(2026, 3, 7, 12, tzinfo=UTC)]
    for _ in range(3):
        runs.append(next_run("30 2 * * *", zone, runs[-1]))
    assert len(set(r.date() for r in runs[1:])) == 3
    assert all(b > a for a, b in itertools.pairwise(runs))
    # Europe: the schedule follows the zone, not UTC
    assert next_run("0 9 * * 1", "Europe/Paris", datetime(2026, 3, 27, tzinfo=UTC)) == datetime(
        2026, 3, 30, 7, tzinfo=UTC
    )


def test_the_engine_fires_threshold_on_a_polled_api(api: JsonApi, db: Database, registry: Registry) -> None:
    api.pages = [[{"full_name": "a/one", "stargazers_count": 50}, {"full_name": "a/two", "stargazers_count": 60}]]
    settings = Settings(
        database=db.url,
        automations=[
            AutomationConfig(
                name="stars",
                source=PluginConfig(
                    kind="http_json",
                    url=f"{api.url}/repos",
                    items="items",
                    key="full_name",
                    metrics={"stars": "stargazers_count"},
                    interval=0.02,
                    host_interval=0.001,
                    allow_private=True,
                ),
                detector=DetectorConfig(kind="threshold", column="stars", level=100),
                retention=None,
            )
        ],
    )

    async def run() -> None:
        engine = Engine(settings, db, registry)
        await engine.start()
        try:
            while len(api.requests) < 3:
                await asyncio.sleep(0.01)
            api.set_stars({"a/one": 150})
            await first_signals(db, "stars")
        finally:
            await engine.stop()

    asyncio.run(run())
    signals = db.read_sync(list_signals, automation="stars", limit=10)
    assert [s.key for s in signals] == ["a/one"]


# -- what http_json shares with rss and web_page (sources/fetch.py, sources/hosts.py) ------------


def test_last_modified_goes_back_a_304_gives_no_frame_and_later_pages_are_not_conditional(api: JsonApi) -> None:
    api.last_modified = "Wed, 01 Jul 2026 10:00:00 GMT"
    clock = Clock()
    src = source(api, clock)

    def after_poll() -> None:  # poll 2 is answered 304; then the API changes
        if src.polls == 2:
            api.last_modified = "Wed, 01 Jul 2026 11:00:00 GMT"
            api.set_stars({"c/four": 41})

    clock.hook = after_poll
    frames = asyncio.run(take(src, 2))
    assert frames[1].columns["stars"].tolist() == [10.0, 20.0, 30.0, 41.0]
    sent = [(path, headers.get("If-Modified-Since")) for path, headers in api.requests]
    old = "Wed, 01 Jul 2026 10:00:00 GMT"
    assert sent == [
        ("/repos", None),
        ("/repos?page=2", None),
        ("/repos?page=3", None),
        ("/repos", old),  # 304: the poll ends there, no frame
        ("/repos", old),  # 200 with the new date; its following pages are read whole
        ("/repos?page=2", None),
        ("/repos?page=3", None),
    ]


def test_headers_are_not_sent_on_to_another_origin_by_a_redirect(api: JsonApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "s3cret")
    port = api.url.rsplit(":", 1)[1]
    api.redirects["/repos"] = f"http://localhost:{port}/moved"  # the same server under another name
    src = source(api, Clock(), next=None, headers={"Authorization": "Bearer ${API_TOKEN}"})
    (frame,) = asyncio.run(take(src, 1))
    assert len(frame) == 2
    (first, first_headers), (second, second_headers) = api.requests[:2]
    assert (first, second) == ("/repos", "/moved")
    assert first_headers["Authorization"] == "Bearer s3cret" and "Authorization" not in second_headers


def test_requests_of_two_automations_to_one_host_share_its_interval(api: JsonApi, db: Database) -> None:
    """Two automations polling one API as fast as they may: the process's host gate spaces
    every request to that host by ``host_interval``, whichever automation sends it."""
    api.pages = [[{"full_name": "a/one", "stargazers_count": 1}]]
    gap = 0.2

    def automation(name: str) -> AutomationConfig:
        options: dict[str, Any] = {"url": f"{api.url}/repos?for={name}", "items": "items", "key": "full_name"}
        options |= {"metrics": {"stars": "stargazers_count"}, "interval": 0.01, "host_interval": gap}
        source = PluginConfig(kind="http_json", allow_private=True, **options)
        return AutomationConfig(name=name, source=source, detector=DetectorConfig(kind="threshold", column="stars",
                                level=100), retention=None)  # fmt: skip

    settings = Settings(database=db.url, automations=[automation("one"), automation("two")])

    async def run() -> None:
        engine = Engine(settings, db, Registry.from_entry_points())
        await engine.start()
        try:
            async with asyncio.timeout(10):
                while len(api.arrivals) < 6:
                    await asyncio.sleep(0.01)
        finally:
            await engine.stop()

    asyncio.run(run())
    assert {path for path, _ in api.requests} == {"/repos?for=one", "/repos?for=two"}
    # measured where they arrive, so the first (a new connection, a new server thread) may come
    # late and shorten one gap: the span of the five after it is what the gate decides (alone,
    # each automation would poll every 10 ms)
    arrivals = api.arrivals[1:6]
    assert arrivals[-1] - arrivals[0] > 4 * gap * 0.9, arrivals
    assert statistics.median(b - a for a, b in itertools.pairwise(arrivals)) > gap * 0.9


def test_the_old_option_names_are_refused_with_the_new_one(registry: Registry) -> None:
    text = """\
automations:
  - name: stars
    source:
      kind: http_json
      url: https://api.github.com/search/repositories?q=llm
      key: full_name
      metrics: {stars: stargazers_count}
      rate: 2
    detector: {kind: threshold, column: stars, level: 100}
"""
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, file="signalmint.yaml", registry=registry, env={})
    error = caught.value
    assert (error.file, error.line, error.key) == ("signalmint.yaml", 8, "automations[0].source.rate")
    assert error.message == "sources.http_json: `rate` was renamed `host_interval`"
    assert "host_interval: 1" in str(error.hint)
    base = {"url": "https://api.example.com/x", "key": "k", "metrics": {"v": "v"}}
    for old, new in (("site", "user_agent"), ("allow_loopback", "allow_private")):
        with pytest.raises(ValidationError, match=f"`{old}` was renamed `{new}`"):
            HttpJsonOptions.model_validate(base | {old: "x"})


def test_headers_need_https_to_a_public_host() -> None:
    base = {"key": "k", "metrics": {"v": "v"}, "headers": {"Authorization": "Bearer ${T}"}}
    with pytest.raises(ValidationError, match="use https"):
        HttpJsonOptions.model_validate(base | {"url": "http://api.example.com/x"})
    HttpJsonOptions.model_validate(base | {"url": "https://api.example.com/x"})
