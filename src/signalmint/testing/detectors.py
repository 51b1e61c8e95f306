"""Checks every detector must pass: a detector is a pure, picklable function of its history."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ..records import BAR_COLUMNS, COLUMN_KINDS, MEASURES, ColumnKind, Frame, OutcomeRule, Schema, Scores
from ..registry import declared

__all__ = ["check_detector", "detector_checks", "example_frames", "needs_of"]

Factory = Callable[[], Any]


def example_frames(ticks: int = 80, keys: int = 25, seed: int = 0, needs: Schema | None = None) -> list[Frame]:
    """Lognormal bars with a few spikes, keys dropping out and joining, one frame per tick.

    ``needs`` adds the columns a detector reads that bars do not have: a metric is a price
    that drops by 30% on some ticks and is 0 (out of stock) on others; a text is a short
    line per key that changes every few ticks.
    """
    rng = np.random.default_rng(seed)
    extra = {name: kind for name, kind in (needs or {}).items() if name not in BAR_COLUMNS}
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
        texts: dict[str, npt.NDArray[np.object_]] = {}
        phase = np.arange(keys) + t
        for name, kind in extra.items():
            if kind == "text":
                texts[name] = np.array(
                    [
                        f"{name} of {key}, version {(i + t) // 9}: {'lorem ipsum ' * (i % 3)}"
                        for i, key in enumerate(names)
                    ],
                    dtype=object,
                )
            else:
                value = 20.0 + close / 5
                value[phase % 13 == 0] *= 0.7
                value[phase % 11 == 0] = 0.0
                columns[name] = value
        mask = np.flatnonzero(present)
        frames.append(
            Frame(
                keys=names[mask],
                times=np.full(len(mask), start + np.timedelta64(t, "m")),
                columns={c: columns[c][mask] for c in columns},
                texts={c: v[mask] for c, v in texts.items()},
            )
        )
    return frames


def needs_of(detector: Any) -> dict[str, ColumnKind]:
    """What a detector instance declares it needs (its options read from its attributes)."""
    cls = type(detector)
    return declared(cls, _options_of(detector))


def _options_of(plugin: Any) -> dict[str, Any]:
    """A plugin's options as its constructor stored them (under their own names)."""
    fields = type(plugin).Options.model_fields
    return {name: getattr(plugin, name) for name in fields if hasattr(plugin, name)}


def _run(detector: Any, frames: list[Frame]) -> list[Scores]:
    return [detector.update(frame) for frame in frames]


def _frames(factory: Factory, **kwargs: Any) -> list[Frame]:
    return example_frames(needs=needs_of(factory()), **kwargs)


def _same(a: list[Scores], b: list[Scores], what: str) -> None:
    assert len(a) == len(b), what
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.keys, y.keys), f"{what}: keys differ"
        assert np.array_equal(x.flags, y.flags), f"{what}: flags differ"
        np.testing.assert_array_equal(x.score, y.score, err_msg=what)
        assert set(x.details) == set(y.details), f"{what}: detail columns differ"
        for name in x.details:
            np.testing.assert_array_equal(x.details[name], y.details[name], err_msg=f"{what}: {name}")
        assert set(x.extras) == set(y.extras), f"{what}: extras differ"
        for name in x.extras:
            assert list(x.extras[name]) == list(y.extras[name]), f"{what}: extra {name!r} differs"


def check_has_kind_and_options(factory: Factory) -> None:
    detector = factory()
    assert isinstance(getattr(type(detector), "kind", None), str), "a detector class needs a `kind` string"
    options = getattr(type(detector), "Options", None)
    assert options is not None and hasattr(options, "model_validate"), "a detector needs a pydantic `Options`"


def check_declares_needs(factory: Factory) -> None:
    needs = needs_of(factory())
    for name, kind in needs.items():
        assert isinstance(name, str) and name, "a needed column has a name"
        assert kind in COLUMN_KINDS, f"column {name!r}: kind {kind!r} is not one of {COLUMN_KINDS}"


def check_states_a_known_outcome(factory: Factory) -> None:
    """An ``outcome(options)`` (optional: without one the kind has none) gives an
    :class:`~signalmint.records.OutcomeRule` this version measures, on a column the detector reads."""
    detector = factory()
    declare = getattr(type(detector), "outcome", None)
    if declare is None:
        return
    rule = declare(type(detector).Options.model_validate(_options_of(detector)))
    assert isinstance(rule, OutcomeRule), "outcome(options) returns an OutcomeRule"
    assert rule.measure in MEASURES, f"outcome measure {rule.measure!r} is not one of {MEASURES}"
    if rule.observed:
        assert rule.column, "an observed outcome names the column it watches"
        needs = needs_of(detector)
        assert not needs or rule.column in needs, f"the outcome watches {rule.column!r}, which the detector never reads"
    if rule.measure == "none":
        assert rule.reason, "a kind without an outcome says why (the track record shows it)"


def check_scores_align_with_input(factory: Factory) -> None:
    for frame in _frames(factory, ticks=40):
        scores = factory().update(frame)
        assert len(scores) == len(frame), "one score per input row"
        assert np.array_equal(scores.keys, frame.keys), "scores keep the input's row order"
        assert np.array_equal(scores.times, frame.times)
        assert scores.flags.dtype == np.bool_
        for name, column in scores.details.items():
            assert len(column) == len(frame), f"detail {name!r} has one value per row"
        for name, column in scores.extras.items():
            assert len(column) == len(frame), f"extra {name!r} has one value per row"


def check_does_not_mutate_input(factory: Factory) -> None:
    frames = _frames(factory)
    before = copy.deepcopy(frames)
    _run(factory(), frames)
    for a, b in zip(frames, before, strict=True):
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.times, b.times)
        for name in a.columns:
            assert np.array_equal(a.columns[name], b.columns[name]), f"column {name!r} was changed"
        for name in a.texts:
            assert list(a.texts[name]) == list(b.texts[name]), f"text column {name!r} was changed"


def check_deterministic(factory: Factory) -> None:
    frames = _frames(factory)
    _same(_run(factory(), frames), _run(factory(), frames), "same input, same scores")


def check_pickles_mid_stream(factory: Factory) -> None:
    frames = _frames(factory)
    half = len(frames) // 2
    detector = factory()
    _run(detector, frames[:half])
    clone = pickle.loads(pickle.dumps(detector))
    _same(_run(detector, frames[half:]), _run(clone, frames[half:]), "a pickled detector continues identically")


def check_flags_something(factory: Factory) -> None:
    flagged = sum(int(s.flags.sum()) for s in _run(factory(), _frames(factory)))
    assert flagged > 0, "the example frames (volume spikes, price drops, restocks, text edits) raise no flag"


def check_batch_equals_streaming(factory: Factory) -> None:
    """A detector that offers ``batch(history) -> Scores`` (backtests use it) flags and scores a
    whole history exactly as it would stream it frame by frame."""
    if not callable(getattr(factory(), "batch", None)):
        return
    frames = _frames(factory)
    streamed = _run(factory(), frames)
    history = Frame(
        keys=np.concatenate([f.keys for f in frames]),
        times=np.concatenate([f.times for f in frames]),
        columns={name: np.concatenate([f.columns[name] for f in frames]) for name in frames[0].columns},
        texts={name: np.concatenate([f.texts[name] for f in frames]) for name in frames[0].texts},
    )
    batch = factory().batch(history)
    assert len(batch) == len(history), "batch: one score per input row"
    assert np.array_equal(batch.flags, np.concatenate([s.flags for s in streamed])), "batch flags differ from streaming"
    np.testing.assert_array_equal(batch.score, np.concatenate([s.score for s in streamed]), err_msg="batch scores")


_CHECKS = [
    check_has_kind_and_options,
    check_declares_needs,
    check_states_a_known_outcome,
    check_scores_align_with_input,
    check_does_not_mutate_input,
    check_deterministic,
    check_pickles_mid_stream,
    check_flags_something,
    check_batch_equals_streaming,
]


def detector_checks() -> Iterator[Callable[[Factory], None]]:
    yield from _CHECKS


def check_detector(factory: Factory) -> None:
    """Run every check against detectors built by ``factory()``."""
    for check in detector_checks():
        check(factory)
