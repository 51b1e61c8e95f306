"""Checks every detector must pass: a detector is a pure, picklable function of its history."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..records import BAR_COLUMNS, Frame, Scores

__all__ = ["check_detector", "detector_checks", "example_frames"]

Factory = Callable[[], Any]


def example_frames(ticks: int = 80, keys: int = 25, seed: int = 0) -> list[Frame]:
    """Lognormal bars with a few spikes, keys dropping out and joining, one frame per tick."""
    rng = np.random.default_rng(seed)
    names = np.array([f"K{i:03d}" for i in range(keys)])
    start = np.datetime64("2024-01-02T14:30", "ns")
    frames = []
    close = np.full(keys, 50.0)
    for t in range(ticks):
        present = rng.random(keys) > 0.1 if t % 7 == 3 else np.ones(keys, dtype=bool)
        volume = rng.lognormal(8, 0.3, keys)
        volume[(np.arange(keys) + t) % 37 == 0] *= 10
        close = close * np.exp(rng.normal(0, 0.01, keys))
        columns = {
            "open": close.copy(),
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close.copy(),
            "volume": volume,
        }
        mask = np.flatnonzero(present)
        frames.append(
            Frame(
                keys=names[mask],
                times=np.full(len(mask), start + np.timedelta64(t, "m")),
                columns={c: columns[c][mask] for c in BAR_COLUMNS},
            )
        )
    return frames


def _run(detector: Any, frames: list[Frame]) -> list[Scores]:
    return [detector.update(frame) for frame in frames]


def _same(a: list[Scores], b: list[Scores], what: str) -> None:
    assert len(a) == len(b), what
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.keys, y.keys), f"{what}: keys differ"
        assert np.array_equal(x.flags, y.flags), f"{what}: flags differ"
        np.testing.assert_array_equal(x.score, y.score, err_msg=what)
        assert set(x.details) == set(y.details), f"{what}: detail columns differ"
        for name in x.details:
            np.testing.assert_array_equal(x.details[name], y.details[name], err_msg=f"{what}: {name}")


def check_has_kind_and_options(factory: Factory) -> None:
    detector = factory()
    assert isinstance(getattr(type(detector), "kind", None), str), "a detector class needs a `kind` string"
    options = getattr(type(detector), "Options", None)
    assert options is not None and hasattr(options, "model_validate"), "a detector needs a pydantic `Options`"


def check_scores_align_with_input(factory: Factory) -> None:
    for frame in example_frames(ticks=40):
        scores = factory().update(frame)
        assert len(scores) == len(frame), "one score per input row"
        assert np.array_equal(scores.keys, frame.keys), "scores keep the input's row order"
        assert np.array_equal(scores.times, frame.times)
        assert scores.flags.dtype == np.bool_
        for name, column in scores.details.items():
            assert len(column) == len(frame), f"detail {name!r} has one value per row"


def check_does_not_mutate_input(factory: Factory) -> None:
    frames = example_frames()
    before = copy.deepcopy(frames)
    _run(factory(), frames)
    for a, b in zip(frames, before, strict=True):
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.times, b.times)
        for name in a.columns:
            assert np.array_equal(a.columns[name], b.columns[name]), f"column {name!r} was changed"


def check_deterministic(factory: Factory) -> None:
    frames = example_frames()
    _same(_run(factory(), frames), _run(factory(), frames), "same input, same scores")


def check_pickles_mid_stream(factory: Factory) -> None:
    frames = example_frames()
    half = len(frames) // 2
    detector = factory()
    _run(detector, frames[:half])
    clone = pickle.loads(pickle.dumps(detector))
    _same(_run(detector, frames[half:]), _run(clone, frames[half:]), "a pickled detector continues identically")


def check_flags_something(factory: Factory) -> None:
    flagged = sum(int(s.flags.sum()) for s in _run(factory(), example_frames()))
    assert flagged > 0, "tenfold volume spikes in the example frames should raise at least one flag"


_CHECKS = [
    check_has_kind_and_options,
    check_scores_align_with_input,
    check_does_not_mutate_input,
    check_deterministic,
    check_pickles_mid_stream,
    check_flags_something,
]


def detector_checks() -> Iterator[Callable[[Factory], None]]:
    yield from _CHECKS


def check_detector(factory: Factory) -> None:
    """Run every check against detectors built by ``factory()``."""
    for check in detector_checks():
        check(factory)
