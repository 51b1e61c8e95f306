"""Threshold: fires on the crossing, re-arms only past the hysteresis band."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from signalmint.detectors.threshold import Threshold, ThresholdOptions
from signalmint.errors import DetectorError
from signalmint.testing import check_detector
from tests.detectors.frames import frame, stream


def series(det: Threshold, values: list[float]) -> list[bool]:
    return [flags[0] for flags in stream(det, [frame(["A"], t, price=[v]) for t, v in enumerate(values)])]


def test_fires_once_per_crossing_above_and_rearms_past_the_band() -> None:
    det = Threshold(column="price", level=100, hysteresis=5)
    #          arm   fire  stay  still above band  back  fire
    values = [90.0, 100.0, 104.0, 96.0, 101.0, 94.0, 100.5]
    assert series(det, values) == [False, True, False, False, False, False, True]


def test_below_mirrors_above() -> None:
    det = Threshold(column="price", level=10, direction="below", hysteresis=1)
    assert series(det, [12, 9.5, 8, 10.5, 9, 11.5, 10]) == [False, True, False, False, False, False, True]


def test_a_first_value_already_beyond_does_not_fire() -> None:
    assert series(Threshold(column="price", level=100), [150, 160, 99, 100]) == [False, False, False, True]


def test_a_first_value_inside_the_band_arms() -> None:
    det = Threshold(column="price", level=100, hysteresis=5)
    assert series(det, [98, 100, 97, 100, 94, 100]) == [False, True, False, False, False, True]


def test_zero_hysteresis_on_the_level_fires_once_not_on_every_row() -> None:
    assert series(Threshold(column="price", level=100), [99, 100, 100, 100, 99.9, 100]) == [
        False,
        True,
        False,
        False,
        False,
        True,
    ]


def test_nan_is_missing_and_changes_nothing() -> None:
    det = Threshold(column="price", level=100)
    assert series(det, [90, math.nan, 110, math.nan, 120]) == [False, False, True, False, False]


def test_keys_are_independent_and_repeated_keys_go_in_row_order() -> None:
    det = Threshold(column="price", level=100)
    f = frame(["A", "B", "A", "A", "B"], [0, 0, 1, 2, 1], price=[90, 110, 101, 99, 120])
    scores = det.update(f)
    assert scores.flags.tolist() == [False, False, True, False, False]
    assert scores.details["previous"][[2, 3]].tolist() == [90, 101]
    assert scores.score.tolist() == [-10, 10, 1, -1, 20]
    # A re-armed at 99 (below, no band): the next crossing fires
    assert det.update(frame(["A"], 3, price=[100])).flags.tolist() == [True]


def test_state_survives_pickling() -> None:
    det = Threshold(column="price", level=100)
    det.update(frame(["A"], 0, price=[50]))
    clone = pickle.loads(pickle.dumps(det))
    assert clone.update(frame(["A"], 1, price=[150])).flags.tolist() == [True]


def test_needs_the_configured_column_and_refuses_bad_options() -> None:
    assert Threshold.needs(ThresholdOptions(column="price", level=1)) == {"price": "metric"}
    with pytest.raises(DetectorError, match="hysteresis"):
        Threshold(column="price", level=1, hysteresis=-1)
    with pytest.raises(DetectorError, match="direction"):
        Threshold(column="price", level=1, direction="sideways")


def test_conformance() -> None:
    check_detector(lambda: Threshold(column="close", level=50.0, hysteresis=0.2))
    assert np.isfinite(Threshold(level=1).update(frame(["A"], 0, close=[2])).score).all()


def test_a_cached_tick_of_the_same_keys_and_a_new_key_order() -> None:
    det = Threshold(column="price", level=100)
    det.update(frame(["A", "B"], 0, price=[90, 90]))
    assert det.update(frame(["A", "B"], 1, price=[101, 99])).flags.tolist() == [True, False]  # same keys: cached rows
    assert det.update(frame(["B", "A"], 2, price=[101, 99])).flags.tolist() == [True, False]  # order changed
    assert det.update(frame(["C", "B", "A"], 3, price=[50, 50, 101])).flags.tolist() == [False, False, True]
