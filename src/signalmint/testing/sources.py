"""Checks every source must pass: declared columns, valid rows in time order, a resumable stream.

A source gives the columns its ``schema`` declares (market bars when it declares none);
the bar rules (finite, volume >= 0, high >= low, one tick per frame) hold for bar sources
only: a shop or feed source is checked against its metric and text columns instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..records import BAR_COLUMNS, COLUMN_KINDS, ColumnKind, Frame, to_datetime
from ..registry import declared

__all__ = ["check_source", "schema_of", "source_checks"]

Factory = Callable[[], Any]


async def _take(source: Any, count: int, since: Any = None) -> list[Frame]:
    frames: list[Frame] = []
    stream = source.stream(since)
    try:
        async for frame in stream:
            frames.append(frame)
            if len(frames) >= count:
                break
    finally:
        await stream.aclose()
    return frames


def _frames(factory: Factory, count: int = 50, since: Any = None) -> list[Frame]:
    return asyncio.run(asyncio.wait_for(_take(factory(), count, since), timeout=30))


def check_has_kind_and_options(factory: Factory) -> None:
    source = factory()
    assert isinstance(getattr(type(source), "kind", None), str), "a source class needs a `kind` string"
    assert hasattr(getattr(type(source), "Options", None), "model_validate"), "a source needs a pydantic `Options`"
    assert isinstance(source.rejected, Mapping), "`rejected` maps reasons to counts"


def schema_of(source: Any) -> dict[str, ColumnKind]:
    """What a source instance declares it gives (its options read from its attributes)."""
    fields = type(source).Options.model_fields
    return declared(type(source), {name: getattr(source, name) for name in fields if hasattr(source, name)})


def _is_bars(schema: dict[str, ColumnKind]) -> bool:
    return all(schema.get(name) == "bar" for name in BAR_COLUMNS)


def check_declares_columns(factory: Factory) -> None:
    schema = schema_of(factory())
    assert schema, "a source gives at least one column"
    for name, kind in schema.items():
        assert kind in COLUMN_KINDS, f"column {name!r}: kind {kind!r} is not one of {COLUMN_KINDS}"


def check_rows_match_schema(factory: Factory) -> None:
    schema = schema_of(factory())
    frames = _frames(factory)
    assert frames, "the source produced no frames"
    last: dict[str, np.datetime64] = {}
    for frame in frames:
        assert isinstance(frame, Frame)
        assert frame.times.dtype == np.dtype("datetime64[ns]")
        assert not np.isnat(frame.times).any(), "every row has a time"
        for name, kind in schema.items():
            if kind == "text":
                assert name in frame.texts, f"declared text column {name!r} is missing"
                assert all(v is None or isinstance(v, str) for v in frame.texts[name]), f"{name}: str or None"
            else:
                assert name in frame.columns, f"declared {kind} column {name!r} is missing"
                column = frame.columns[name]
                assert column.dtype == np.float64, f"{name}: float64 values"
                assert not np.isinf(column).any(), f"{name}: infinite values do not pass validation"
        for key, time in zip(frame.keys.tolist(), frame.times, strict=True):
            assert key, "every row has a key"
            assert key not in last or time > last[key], f"{key}: rows of a key come in increasing time"
            last[key] = time


def check_ticks_are_valid_bars(factory: Factory) -> None:
    if not _is_bars(schema_of(factory())):
        return  # a shop, feed or metrics source: no OHLC rules (see check_rows_match_schema)
    frames = _frames(factory)
    assert frames, "the source produced no frames"
    last = None
    for frame in frames:
        assert isinstance(frame, Frame)
        assert set(BAR_COLUMNS) <= set(frame.columns), f"bar columns {BAR_COLUMNS} are required"
        assert frame.times.dtype == np.dtype("datetime64[ns]")
        assert len(np.unique(frame.times)) == 1, "one bar time per frame (one tick)"
        assert len(np.unique(frame.keys)) == len(frame), "keys are unique within a tick"
        for name in BAR_COLUMNS:
            assert np.isfinite(frame.columns[name]).all(), f"{name}: only finite values pass validation"
        assert (frame.columns["volume"] >= 0).all()
        assert (frame.columns["high"] >= frame.columns["low"]).all()
        if last is not None:
            assert frame.times[0] > last, "ticks come in increasing time"
        last = frame.times[0]


def check_resumes_after_since(factory: Factory) -> None:
    first = _frames(factory, 20)
    since = to_datetime(first[len(first) // 2].times[0])
    resumed = _frames(factory, 10, since=since)
    cutoff = np.datetime64(since.replace(tzinfo=None), "ns")
    assert resumed, "a resumed stream still produces frames"
    assert all((frame.times > cutoff).all() for frame in resumed), "no bar at or before `since` comes again"


_CHECKS = [
    check_has_kind_and_options,
    check_declares_columns,
    check_rows_match_schema,
    check_ticks_are_valid_bars,
    check_resumes_after_since,
]


def source_checks() -> Iterator[Callable[[Factory], None]]:
    yield from _CHECKS


def check_source(factory: Factory) -> None:
    """Run every check against sources built by ``factory()``."""
    for check in source_checks():
        check(factory)
