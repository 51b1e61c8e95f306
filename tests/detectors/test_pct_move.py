"""pct_move: a move of x% over N rows of a key or over a duration, fired once per move."""

from __future__ import annotations

import math
import pickle
from datetime import timedelta

import pytest

from signalmint.detectors.pct_move import PctMove
from signalmint.errors import DetectorError
from signalmint.testing import check_detector
from tests.detectors.frames import frame, stream


def run(det: PctMove, values: list[float], minutes: list[int] | None = None) -> tuple[list[bool], list[float]]:
    flags, scores = [], []
    for i, v in enumerate(values):
        s = det.update(frame(["A"], minutes[i] if minutes else i, close=[v]))
        flags.append(bool(s.flags[0]))
        scores.append(round(float(s.score[0]), 4))
    return flags, scores


def test_window_of_rows_hand_computed() -> None:
    # window 3: row i is compared with row i - 3
    flags, scores = run(PctMove(pct=10, window=3), [100, 95, 90, 111, 104, 80, 70])
    assert all(math.isnan(s) for s in scores[:3])
    # 111/100 = +11%, 104/95 = +9.47%, 80/90 = -11.11%, 70/111 = -36.94%
    assert scores[3:] == [11.0, 9.4737, -11.1111, -36.9369]
    # fires at +11%, re-arms at +9.47%, fires at -11.1%, stays beyond at -36.9%
    assert flags == [False, False, False, True, False, True, False]


def test_direction_up_ignores_falls() -> None:
    flags, _ = run(PctMove(pct=10, window=1, direction="up"), [100, 80, 100, 90])
    assert flags == [False, False, True, False]  # -20% ignored, +25% fires, -10% ignored
    flags, _ = run(PctMove(pct=10, window=1, direction="down"), [100, 80, 100, 90])
    assert flags == [False, True, False, True]


def test_over_a_duration_uses_the_value_in_force_that_long_ago() -> None:
    det = PctMove(pct=5, over=timedelta(minutes=10))
    # minutes 0, 4, 9: no value 10 minutes earlier yet
    # minute 10: base is the value at minute 0 (100) -> +6%: fires
    # minute 15: base is the value at minute 4 (102) -> +2.9%: re-arms
    # minute 19: base is minute 9's (99) -> 104/99 = +5.05%: fires
    flags, scores = run(det, [100, 102, 99, 106, 105, 104], [0, 4, 9, 10, 15, 19])
    assert [math.isnan(s) for s in scores[:3]] == [True] * 3
    assert scores[3:] == [6.0, 2.9412, 5.0505]
    assert flags == [False, False, False, True, False, True]


def test_nan_and_zero_bases_do_not_score() -> None:
    flags, scores = run(PctMove(pct=10, window=1), [0, 5, math.nan, 10])
    assert math.isnan(scores[1]) and math.isnan(scores[2])  # from 0: undefined; NaN: missing
    assert scores[3] == 100.0 and flags == [False, False, False, True]  # NaN skipped: 10 vs 5


def test_keys_are_independent_within_one_frame() -> None:
    det = PctMove(pct=10, window=1)
    assert stream(det, [frame(["A", "B", "A"], [0, 0, 1], close=[10, 10, 12]), frame(["B"], 2, close=[8])]) == [
        [False, False, True],
        [True],
    ]


def test_pickles_and_refuses_bad_options() -> None:
    det = PctMove(pct=10, window=1)
    det.update(frame(["A"], 0, close=[10]))
    assert pickle.loads(pickle.dumps(det)).update(frame(["A"], 1, close=[20])).flags.tolist() == [True]
    with pytest.raises(DetectorError, match="pct"):
        PctMove(pct=0)
    assert PctMove(over="1h").over == timedelta(hours=1)


def test_conformance() -> None:
    check_detector(lambda: PctMove(column="volume", pct=200, window=5))
    check_detector(lambda: PctMove(column="close", pct=1, over=timedelta(minutes=5)))
