"""FileReplay: CSV and Parquet, column mapping, bad rows, timezones, errors, resume."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from signalmint.errors import SourceError
from signalmint.records import BAR_COLUMNS, Frame
from signalmint.registry import Source
from signalmint.sources.file import FileReplay


def build(**options: Any) -> FileReplay:
    return FileReplay(**FileReplay.Options.model_validate(options).model_dump())


def collect(source: FileReplay, since: datetime | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        return [f async for f in source.stream(since)]

    return asyncio.run(run())


def rows(frames: list[Frame]) -> list[tuple[str, str, float]]:
    """(key, ISO time, volume) of every emitted row."""
    return [
        (str(k), str(t.astype("datetime64[s]")), float(v))
        for f in frames
        for k, t, v in zip(f.keys, f.times, f.columns["volume"], strict=True)
    ]


def bars(n: int = 3, keys: tuple[str, ...] = ("AAA", "BBB")) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in ("symbol", "time", *BAR_COLUMNS)}
    for i in range(n):
        for j, key in enumerate(keys):
            out["symbol"].append(key)
            out["time"].append(f"2024-01-02T09:{30 + i:02d}:00Z")
            out["open"].append(10.0 + i)
            out["high"].append(12.0 + i)
            out["low"].append(9.0 + i)
            out["close"].append(11.0 + i)
            out["volume"].append(float(100 * (i + 1) + j))
    return out


def test_csv_replay_ticks_grouped_by_time(tmp_path: Path) -> None:
    # grouped by key, BBB first: not in time order, but each key's rows are
    df = pl.DataFrame(bars()).sort("symbol", "time", descending=[True, False])
    path = tmp_path / "bars.csv"
    df.write_csv(path)
    source = build(path=str(path))
    assert isinstance(source, Source) and source.kind == "file"
    frames = collect(source)
    assert len(frames) == 3
    for i, f in enumerate(frames):
        assert len(f) == 2 and set(f.keys.tolist()) == {"AAA", "BBB"}
        assert (f.times == np.datetime64(f"2024-01-02T09:{30 + i}:00", "ns")).all()
        assert all(f.columns[c].dtype == np.float64 for c in BAR_COLUMNS)
        assert sorted(f.columns["volume"].tolist()) == [100.0 * (i + 1), 100.0 * (i + 1) + 1]
    assert not source.rejected


def test_parquet_with_mapping_and_datetime_column(tmp_path: Path) -> None:
    data = bars()
    df = pl.DataFrame(data).with_columns(
        pl.col("time").str.to_datetime(time_zone="UTC").dt.convert_time_zone("Asia/Tokyo")
    )
    df = df.rename({"symbol": "Ticker", "time": "ts", "volume": "Vol", "open": "O"})
    path = tmp_path / "bars.parquet"
    df.write_parquet(path)
    source = build(path=str(path), columns={"key": "Ticker", "time": "ts", "volume": "Vol", "open": "O"})
    frames = collect(source)
    assert [f.times[0] for f in frames] == [np.datetime64(f"2024-01-02T09:{m}:00", "ns") for m in (30, 31, 32)]
    assert frames[0].columns["open"].tolist() == [10.0, 10.0]
    assert rows(frames)[-1] == ("BBB", "2024-01-02T09:32:00", 301.0)


def test_parquet_naive_datetime_needs_timezone(tmp_path: Path) -> None:
    df = pl.DataFrame(bars(2)).with_columns(pl.col("time").str.to_datetime(time_zone="UTC").dt.replace_time_zone(None))
    path = tmp_path / "naive.parquet"
    df.write_parquet(path)
    strict = build(path=str(path))
    assert collect(strict) == []
    assert dict(strict.rejected) == {"naive_timestamp": 4}
    ny = build(path=str(path), timezone="America/New_York")
    frames = collect(ny)
    assert frames[0].times[0] == np.datetime64("2024-01-02T14:30:00", "ns")
    assert not ny.rejected


def test_iso_offsets_and_naive_text(tmp_path: Path) -> None:
    data = bars(1, keys=("A", "B", "C", "D", "E"))
    data["time"] = [
        "2024-01-02T14:30:00Z",
        "2024-01-02T14:30:00+00:00",
        "2024-01-02T09:30:00-05:00",
        "2024-01-02 15:30:00+01:00",
        "2024-01-02 09:30:00",  # naive
    ]
    path = tmp_path / "iso.csv"
    pl.DataFrame(data).write_csv(path)
    strict = build(path=str(path))
    frames = collect(strict)
    assert len(frames) == 1 and frames[0].keys.tolist() == ["A", "B", "C", "D"]
    assert (frames[0].times == np.datetime64("2024-01-02T14:30:00", "ns")).all()
    assert dict(strict.rejected) == {"naive_timestamp": 1}
    zoned = build(path=str(path), timezone="America/New_York")
    frames = collect(zoned)
    assert frames[0].keys.tolist() == ["A", "B", "C", "D", "E"] and not zoned.rejected


def test_every_bad_row_counted_and_the_rest_emitted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    header = "symbol,time,open,high,low,close,volume\n"
    lines = [
        "GOOD,2024-01-02T09:30:00Z,10,12,9,11,100",
        "TXT,2024-01-02T09:30:00Z,10,12,9,11,lots",  # bad_value
        ",2024-01-02T09:30:00Z,10,12,9,11,100",  # bad_value (no key)
        "NAN,2024-01-02T09:30:00Z,10,12,9,,100",  # nan (empty cell)
        "NAN2,2024-01-02T09:30:00Z,NaN,12,9,11,100",  # nan
        "INF,2024-01-02T09:30:00Z,10,inf,9,11,100",  # inf
        "NEGV,2024-01-02T09:30:00Z,10,12,9,11,-5",  # negative_volume
        "NEGP,2024-01-02T09:30:00Z,0,12,9,11,100",  # negative_price
        "HL,2024-01-02T09:30:00Z,10,8,9,8.5,100",  # high_lt_low
        "OHLC,2024-01-02T09:30:00Z,10,10.5,9,11,100",  # inconsistent_ohlc
        "BADT,yesterday,10,12,9,11,100",  # bad_timestamp
        "BADT,2024-13-45T09:30:00Z,10,12,9,11,100",  # bad_timestamp
        "NAIVE,2024-01-02T09:30:00,10,12,9,11,100",  # naive_timestamp
        "GOOD,2024-01-02T09:32:00Z,10,12,9,11,300",
        "GOOD,2024-01-02T09:31:00Z,10,12,9,11,200",  # out_of_order: after 09:32 in the file
        "GOOD,2024-01-02T09:32:00Z,10,12,9,11,999",  # duplicate: first 09:32 row wins
        "OTHER,2024-01-02T09:31:00Z,10,12,9,11,50",
    ]
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING, logger="signalmint.sources")
    source = build(path=str(path))
    frames = collect(source)
    assert rows(frames) == [
        ("GOOD", "2024-01-02T09:30:00", 100.0),
        ("OTHER", "2024-01-02T09:31:00", 50.0),
        ("GOOD", "2024-01-02T09:32:00", 300.0),
    ]
    assert dict(source.rejected) == {
        "bad_value": 2,
        "nan": 2,
        "inf": 1,
        "negative_volume": 1,
        "negative_price": 1,
        "high_lt_low": 1,
        "inconsistent_ohlc": 1,
        "bad_timestamp": 2,
        "naive_timestamp": 1,
        "out_of_order": 1,
        "duplicate": 1,
    }
    warnings = [r for r in caplog.records if r.name == "signalmint.sources"]
    assert 1 <= len(warnings) <= 3  # aggregated, not one line per row
    assert sum(int(r.getMessage().split("rejected ")[1].split()[0]) for r in warnings) == 14


def test_since_skips_and_does_not_count_old_rows(tmp_path: Path) -> None:
    data = bars(4)
    data["volume"][1] = -1.0  # a bad row at the first time
    path = tmp_path / "bars.csv"
    pl.DataFrame(data).write_csv(path)
    since = datetime(2024, 1, 2, 9, 31, tzinfo=UTC)
    source = build(path=str(path))
    frames = collect(source, since=since)
    assert [str(f.times[0].astype("datetime64[m]")) for f in frames] == [
        "2024-01-02T09:32",
        "2024-01-02T09:33",
    ]
    assert not source.rejected
    assert collect(build(path=str(path)), since=datetime(2030, 1, 1, tzinfo=UTC)) == []


def test_symbols_filter_and_pace(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    pl.DataFrame(bars(3, keys=("A", "B", "C"))).write_parquet(path)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    opts = FileReplay.Options.model_validate({"path": str(path), "symbols": ["C", "A"], "pace": 0.5})
    source = FileReplay(**opts.model_dump(), sleep=sleep)
    frames = collect(source)
    assert [f.keys.tolist() for f in frames] == [["A", "C"]] * 3
    assert slept == [0.5, 0.5]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match=r"nope\.csv: no such file"):
        build(path=str(path))


def test_missing_column_names_file_column_and_present(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    pl.DataFrame(bars(1)).write_csv(path)
    with pytest.raises(SourceError) as err:
        build(path=str(path), columns={"key": "ticker"})
    message = str(err.value)
    assert "bars.csv" in message and "'ticker'" in message and "columns.key" in message
    assert "symbol, time, open, high, low, close, volume" in message


def test_unknown_extension_and_unreadable_file(tmp_path: Path) -> None:
    data = tmp_path / "bars.dat"
    data.write_text("x")
    with pytest.raises(SourceError, match="format"):
        build(path=str(data))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"broken\.parquet: cannot read it as parquet"):
        build(path=str(broken))


def test_time_column_of_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pl.DataFrame(bars(1)).with_columns(pl.lit(5).alias("time")).write_parquet(path)
    with pytest.raises(SourceError, match=r"columns\.time"):
        collect(build(path=str(path)))


def test_options() -> None:
    with pytest.raises(ValidationError, match="unknown timezone"):
        FileReplay.Options.model_validate({"path": "x.csv", "timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError):
        FileReplay.Options.model_validate({"path": "x.csv", "columns": {"ticker": "t"}})
    opts = FileReplay.Options.model_validate({"path": "x.csv", "columns": {"key": "t"}})
    assert opts.model_dump()["columns"]["time"] == "time"


def test_rows_of_a_key_are_judged_in_file_order(tmp_path: Path) -> None:
    """The chosen semantics: a key's rows must be ascending in the file; ticks are sorted."""
    path = tmp_path / "desc.csv"
    pl.DataFrame(bars(3)).reverse().write_csv(path)  # each key newest first
    source = build(path=str(path))
    assert rows(collect(source)) == [
        ("BBB", "2024-01-02T09:32:00", 301.0),
        ("AAA", "2024-01-02T09:32:00", 300.0),
    ]
    assert dict(source.rejected) == {"out_of_order": 4}
