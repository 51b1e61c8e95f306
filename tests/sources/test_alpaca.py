"""The alpaca source against a local Alpaca-shaped REST and websocket server, through alpaca-py itself."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import AutomationStatus, Engine
from signalmint.errors import SourceError
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources import calendar
from signalmint.sources.alpaca import AlpacaBars, AlpacaOptions
from signalmint.store import Database, list_signals

from .alpaca_server import KEY, SECRET, AlpacaServer, alpaca_server, bar, minutes

__all__ = ["alpaca_server"]  # the fixture, imported for pytest

T0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
TIMES = minutes(T0, 20)
SYMBOLS = ("AAPL", "MSFT")
ENV = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}


def source(server: AlpacaServer, now: datetime, env: Mapping[str, str] | None = ENV, **options: Any) -> AlpacaBars:
    opts: dict[str, Any] = {"symbols": list(SYMBOLS), "warmup": 30, **options}
    validated = AlpacaOptions.model_validate(
        {"data_url": server.data_url, "stream_url": server.stream_url, **opts}
    ).model_dump()
    return AlpacaBars(**validated, clock=now.timestamp, env=env)


def take(src: AlpacaBars, count: int, since: datetime | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        stream = src.stream(since)
        try:
            async for frame in stream:
                frames.append(frame)
                if len(frames) >= count:
                    break
        finally:
            await stream.aclose()
        return frames

    return asyncio.run(asyncio.wait_for(run(), timeout=20))


def times(frames: list[Frame]) -> list[datetime]:
    out = []
    for f in frames:
        assert len(np.unique(f.times)) == 1
        out.append(datetime.fromisoformat(str(f.times[0])[:19]).replace(tzinfo=UTC))
    return out


def every(ts: list[datetime]) -> list[dict[str, Any]]:
    return [bar(s, t, volume=1000 + i) for i, t in enumerate(ts) for s in SYMBOLS]


def test_backfill_then_stream_has_no_gap_and_no_duplicate_at_the_seam(alpaca_server: AlpacaServer) -> None:
    server = alpaca_server
    server.page_size = 7  # 22 bars in the window: four pages
    server.tape = every(TIMES[:11]) + every(TIMES[11:14])  # minute 10 is still forming "now"; 11-13 are ahead
    server.stream = [[b] for b in every(TIMES[8:14])]  # overlaps the backfill by two minutes
    src = source(server, now=TIMES[10] + timedelta(seconds=30))
    frames = take(src, 14)
    assert times(frames) == TIMES[:14]
    assert all(sorted(f.keys.tolist()) == list(SYMBOLS) for f in frames)
    assert frames[9].columns["volume"].tolist() == [1009.0, 1009.0]  # minute 9 from REST (the stream says 1001)
    assert frames[10].columns["volume"].tolist() == [1002.0, 1002.0]  # minute 10 live, not REST's unfinished bar
    assert dict(frames[0].columns) and frames[0].times.dtype == np.dtype("datetime64[ns]")
    bars = [r for r in server.requests if r["path"] == "/v2/stocks/bars"]
    assert len(bars) == 4 and all(r["feed"] == "iex" for r in bars)
    assert bars[1]["page_token"], "alpaca-py follows next_page_token"
    assert datetime.fromisoformat(bars[0]["end"]) == TIMES[10] + timedelta(seconds=30)
    assert server.ws_log[0] == {"action": "auth", "key": KEY, "secret": SECRET}
    assert server.ws_log[1]["bars"] == list(SYMBOLS)
    assert server.ws_content_types == ["application/msgpack"]
    assert dict(src.rejected) == {}, "the overlap is expected, not bad data"


def test_minutes_that_close_while_the_stream_connects_are_fetched(alpaca_server: AlpacaServer) -> None:
    server = alpaca_server
    server.tape = every(TIMES[:16])
    server.stream = [every([t]) for t in TIMES[13:16]]  # the stream begins three minutes after "now"
    src = source(server, now=TIMES[10])
    frames = take(src, 16)
    assert times(frames) == TIMES[:16]
    gap = server.requests[-1]
    assert (
        TIMES[9] < datetime.fromisoformat(gap["start"]) <= TIMES[10] and datetime.fromisoformat(gap["end"]) == TIMES[13]
    )
    assert dict(src.rejected) == {}


def test_resumes_after_since_and_warmup_limits_a_fresh_start(alpaca_server: AlpacaServer) -> None:
    server = alpaca_server
    server.tape = every(TIMES[:11])
    server.stream = [every([t]) for t in TIMES[11:13]]
    assert times(take(source(server, now=TIMES[10]), 6, since=TIMES[5])) == TIMES[6:12]
    assert datetime.fromisoformat(server.requests[0]["start"]) == TIMES[5]
    assert times(take(source(server, now=TIMES[10], warmup=4), 5)) == TIMES[6:11]  # 6-9 closed, 10 fetched


def test_bad_bars_are_dropped_and_counted(alpaca_server: AlpacaServer) -> None:
    server = alpaca_server
    good = every(TIMES[:3])
    server.tape = [*good, bar("AAPL", TIMES[1], h=10.0, l=200.0)]  # high < low (and a second bar of the minute)
    server.stream = [
        [
            bar("AAPL", TIMES[3], o="12.5"),  # text where a number belongs
            bar("MSFT", TIMES[3], t="yesterday"),  # not a time
            bar("AAPL", TIMES[3], v=-5.0),  # negative volume
            bar("AAPL", TIMES[3]),
            bar("AAPL", TIMES[3]),  # the same minute twice
            bar("MSFT", TIMES[3], v=float("nan")),
            bar("MSFT", TIMES[3]),
            bar("MSFT", TIMES[3]),  # after its minute went out (every symbol had reported)
            *every([TIMES[4]]),
        ]
    ]
    src = source(server, now=TIMES[2])
    frames = take(src, 5)
    assert times(frames) == TIMES[:5]
    assert [len(f) for f in frames] == [2, 2, 2, 2, 2]
    assert dict(src.rejected) == {
        "bad_value": 1,
        "bad_timestamp": 1,
        "negative_volume": 1,
        "nan": 1,
        "high_lt_low": 1,
        "duplicate": 1,
        "out_of_order": 1,
    }


def test_an_incomplete_minute_goes_out_after_settle(alpaca_server: AlpacaServer) -> None:
    server = alpaca_server
    server.tape = every(TIMES[:3])
    server.stream = [[bar("AAPL", TIMES[3])]]  # MSFT did not trade that minute
    frames = take(source(server, now=TIMES[2], settle=0.01), 4)
    assert frames[-1].keys.tolist() == ["AAPL"] and times(frames)[-1] == TIMES[3]


def test_keys_come_from_the_environment(alpaca_server: AlpacaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = alpaca_server
    server.tape = every(TIMES[:3])
    monkeypatch.setenv("MY_ALPACA_KEY", KEY)
    monkeypatch.setenv("MY_ALPACA_SECRET", SECRET)
    named = source(server, TIMES[3], env=None, key_env="MY_ALPACA_KEY", secret_env="MY_ALPACA_SECRET")
    assert times(take(named, 3)) == TIMES[:3]
    assert times(take(source(server, TIMES[3], env=None), 3)) == TIMES[:3]  # APCA_API_* set by the fixture

    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(SourceError, match="APCA_API_SECRET_KEY"):
        take(source(server, TIMES[2], env=None), 1)
    with pytest.raises(SourceError, match="not authorized"):
        take(source(server, TIMES[2], env={"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": "wrong"}), 1)
    with pytest.raises(ValidationError):
        AlpacaOptions.model_validate({"symbols": ["AAPL"], "secret": SECRET})  # never in the config file


def test_options() -> None:
    assert AlpacaOptions.model_validate({"symbols": [" aapl", "msft"]}).symbols == ["AAPL", "MSFT"]
    assert AlpacaOptions.model_validate({"symbols": ["AAPL"]}).feed == "iex"
    bad: Mapping[str, object]
    for bad in ({"symbols": []}, {"symbols": ["A", "a"]}, {"symbols": ["A"], "feed": "otc"}):
        with pytest.raises(ValidationError):
            AlpacaOptions.model_validate(bad)


def test_sip_feed_is_requested(alpaca_server: AlpacaServer) -> None:
    alpaca_server.tape = every(TIMES[:2])
    take(source(alpaca_server, TIMES[2], feed="sip"), 2)
    assert {r["feed"] for r in alpaca_server.requests} == {"sip"}


# -- the market calendar ---------------------------------------------------------


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (utc(2026, 12, 7, 14, 30), True),  # Monday 09:30 EST: opens
        (utc(2026, 12, 7, 14, 29), False),  # 09:29 EST
        (utc(2026, 12, 7, 20, 59), True),
        (utc(2026, 12, 7, 21, 0), False),  # 16:00 EST: closed
        (utc(2026, 12, 5, 16, 0), False),  # Saturday
        (utc(2026, 12, 6, 16, 0), False),  # Sunday
        (utc(2026, 12, 25, 16, 0), False),  # Christmas
        (utc(2027, 7, 5, 16, 0), False),  # Independence Day observed on Monday
        (utc(2026, 4, 3, 16, 0), False),  # Good Friday
        (utc(2026, 3, 6, 14, 29), False),  # Friday before DST: 09:29 EST
        (utc(2026, 3, 9, 13, 30), True),  # Monday after DST: 09:30 EDT is 13:30 UTC
        (utc(2026, 3, 9, 20, 0), False),  # 16:00 EDT
        (utc(2026, 11, 27, 17, 59), True),  # day after Thanksgiving: closes at 13:00 EST
        (utc(2026, 11, 27, 18, 0), False),
    ],
)
def test_market_open(at: datetime, is_open: bool) -> None:
    assert calendar.market_open(at) is is_open
    assert AlpacaBars.market_open(at) is is_open


def test_next_open_and_warmup_span_skip_closures() -> None:
    assert calendar.next_open(utc(2026, 12, 24, 22, 0)) == utc(2026, 12, 28, 14, 30)  # over Christmas weekend
    assert calendar.next_open(utc(2026, 12, 7, 15, 0)) == utc(2026, 12, 7, 15, 0)
    # 30 market minutes before Monday 09:45 EST: 15 on Monday, 15 at Friday's close
    assert calendar.market_minutes_start(utc(2026, 12, 7, 14, 45), 30) == utc(2026, 12, 4, 20, 45)
    assert calendar.market_minutes_start(utc(2026, 12, 7, 16, 0), 30) == utc(2026, 12, 7, 15, 30)
    with pytest.raises(ValueError, match="naive"):
        calendar.market_open(datetime(2026, 12, 7, 15, 0))


# -- through the engine -------------------------------------------------------------


def test_engine_signals_a_live_spike_and_a_restart_repeats_nothing(
    alpaca_server: AlpacaServer, db: Database, registry: Registry
) -> None:
    server = alpaca_server
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    past, live = minutes(now - timedelta(minutes=40), 40), minutes(now, 15)

    def tick(t: datetime, i: int) -> list[dict[str, Any]]:
        return [
            bar(s, t, volume=(1000.0 + (i * 37 + 91 * k) % 200) * (20 if (s, t) == ("AAPL", live[5]) else 1))
            for k, s in enumerate(SYMBOLS)
        ]

    server.tape = [b for i, t in enumerate(past) for b in tick(t, i)]
    server.stream = [tick(t, 40 + i) for i, t in enumerate(live[:10])]
    source = PluginConfig(
        kind="alpaca", symbols=list(SYMBOLS), warmup=40, data_url=server.data_url, stream_url=server.stream_url
    )
    settings = Settings(
        database=db.url,
        automations=[
            AutomationConfig(
                name="stocks", source=source, detector=DetectorConfig(kind="volume_spike", window=30, ratio=3, z=4)
            )
        ],
    )

    async def run(bars: int) -> AutomationStatus:
        engine = Engine(settings, db, registry)
        await engine.start()
        status = engine.runners["stocks"].status
        try:
            async with asyncio.timeout(20):
                while status.bars < bars:  # wait for a condition, not for a length of time
                    await asyncio.sleep(0.01)
        finally:
            await engine.stop()
        return status

    first = asyncio.run(run(2 * 50))
    assert first.bars == 100 and first.cursor == live[9] and first.last_error is None
    assert [(s.key, s.time) for s in db.read_sync(list_signals, automation="stocks")] == [("AAPL", live[5])]

    server.stream = [tick(t, 45 + i) for i, t in enumerate(live[5:15])]  # the spike's minute comes again
    second = asyncio.run(run(100 + 2 * 5))  # the count goes on from the checkpoint
    assert second.bars == 110 and second.cursor == live[14] and second.last_error is None
    assert [(s.key, s.time) for s in db.read_sync(list_signals, automation="stocks")] == [("AAPL", live[5])]
