"""Checks every source must pass: ordered ticks of valid bars, and a resumable stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..records import BAR_COLUMNS, Frame, to_datetime

__all__ = ["check_source", "source_checks"]

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


def check_ticks_are_valid_bars(factory: Factory) -> None:
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


_CHECKS = [check_has_kind_and_options, check_ticks_are_valid_bars, check_resumes_after_since]


def source_checks() -> Iterator[Callable[[Factory], None]]:
    yield from _CHECKS


def check_source(factory: Factory) -> None:
    """Run every check against sources built by ``factory()``."""
    for check in source_checks():
        check(factory)
