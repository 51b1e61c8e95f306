"""ranking: the top N movers of each whole interval across all keys, one signal per interval."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from datetime import timedelta

import pytest

from signalmint.detectors.ranking import Ranking, RankingOptions
from signalmint.errors import DetectorError
from signalmint.pipeline import signals_from_scores
from signalmint.records import Scores
from signalmint.store.signals import signal_hash
from signalmint.testing import check_detector
from tests.detectors.frames import frame

KEYS = ["A", "B", "C", "D"]


def ranks(scores: Scores) -> list[tuple[int, str, float]]:
    [row] = [i for i, f in enumerate(scores.flags) if f]
    return [(r["rank"], r["key"], round(r["move"], 4)) for r in scores.extras["ranks"][row]]


def feed(det: Ranking, minute: int, values: Sequence[float], keys: Sequence[str] = KEYS) -> Scores:
    return det.update(frame(keys, minute, close=values))


def test_one_signal_per_whole_interval_hand_computed() -> None:
    det = Ranking(top=3, interval=timedelta(minutes=10))
    assert not feed(det, 5, [10, 20, 50, 8]).flags.any()  # partial interval [0, 10): no ranking
    assert not feed(det, 10, [10, 20, 50, 8]).flags.any()  # boundary: bases set, nothing to rank
    assert not feed(det, 15, [11, 19, 50, 10]).flags.any()
    scores = feed(det, 20, [12, 30, 40, 12])  # closes [10, 20): moves from the minute-10 values
    # A 10 -> 11: +10%; B 20 -> 19: -5%; C 50 -> 50: 0%; D 8 -> 10: +25%
    assert ranks(scores) == [(1, "D", 25.0), (2, "A", 10.0), (3, "B", -5.0)]
    assert scores.flags.tolist() == [False, False, False, True]  # on the top mover's row
    assert scores.score[3] == 25.0 and math.isnan(scores.score[0])
    assert (scores.extras["start"][3], scores.extras["end"][3]) == (
        "2024-01-02T09:10:00+00:00",
        "2024-01-02T09:20:00+00:00",
    )
    assert not feed(det, 29, [12, 30, 40, 12]).flags.any()
    # closes [20, 30): from the last values before minute 20 (11, 19, 50, 10) to the last ones
    # before minute 30 (12, 30, 40, 12); minute 30's own values belong to the next interval
    scores = feed(det, 30, [99, 99, 99, 99])
    # B +57.89%; C -20% and D +20% tie on |move| and go by key; A +9.09% is fourth
    assert ranks(scores) == [(1, "B", 57.8947), (2, "C", -20.0), (3, "D", 20.0)]


def test_direction_and_absolute_change() -> None:
    values = [[10, 20, 50, 8], [11, 19, 45, 10]]
    for direction, by, expected in [
        ("up", "pct", [(1, "D", 25.0), (2, "A", 10.0)]),
        ("down", "pct", [(1, "C", -10.0), (2, "B", -5.0)]),
        ("both", "change", [(1, "C", -5.0), (2, "D", 2.0)]),
    ]:
        det = Ranking(top=2, interval=timedelta(minutes=10), direction=direction, by=by)
        feed(det, 0, values[0])
        feed(det, 10, values[0])
        feed(det, 15, values[1])
        assert ranks(feed(det, 20, values[1])) == expected, direction


def test_a_boundary_inside_a_frame_and_late_rows() -> None:
    det = Ranking(top=2, interval=timedelta(minutes=10))
    feed(det, 9, [10, 10], ["A", "B"])
    feed(det, 10, [10, 10], ["A", "B"])
    # one frame: B at 9:15, A at 9:21 (opens [20, 30)), B at 9:19 (late: counts towards [20, 30))
    scores = det.update(frame(["B", "A", "B"], [15, 21, 19], close=[12, 30, 50]))
    # B tops the ranking, but its row here arrived late: the signal goes on the row opening [20, 30)
    assert scores.flags.tolist() == [False, True, False]
    assert ranks(scores) == [(1, "B", 20.0), (2, "A", 0.0)]  # B 10 -> 12; A's 30 is in the next
    scores = feed(det, 30, [30, 50], ["A", "B"])
    assert ranks(scores) == [(1, "B", 316.6667), (2, "A", 200.0)]  # B 12 -> 50, A 10 -> 30


def test_keys_without_a_base_or_with_a_zero_base_are_not_ranked_and_nothing_gives_no_signal() -> None:
    det = Ranking(interval=timedelta(minutes=10))
    feed(det, 0, [0, 5], ["Z", "Y"])
    feed(det, 10, [0, 5], ["Z", "Y"])
    feed(det, 15, [3, 6, 100], ["Z", "Y", "NEW"])
    assert ranks(feed(det, 20, [3, 6], ["Z", "Y"])) == [(1, "Y", 20.0)]
    det = Ranking(interval=timedelta(minutes=10))
    feed(det, 0, [1], ["A"])
    assert not feed(det, 10, [1], ["A"]).flags.any()


def test_the_payload_is_json_and_hashes() -> None:
    det = Ranking(top=2, interval=timedelta(minutes=10))
    feed(det, 0, [10, 20, 50, 8])
    feed(det, 10, [10, 20, 50, 8])
    feed(det, 15, [11, 20, 50, 8])
    [signal] = signals_from_scores("movers", "ranking", feed(det, 20, [11, 20, 50, 8]))
    assert signal.key == "A" and signal.payload["movers"] == 4.0
    assert signal.payload["ranks"][0] == {"rank": 1, "key": "A", "move": 10.0, "from": 10.0, "to": 11.0}
    assert len(signal_hash(signal, 1, "")) == 64


def test_options_and_pickling() -> None:
    with pytest.raises(DetectorError, match="longer than zero"):
        Ranking(interval=timedelta(0))
    assert Ranking(interval="15m").interval == timedelta(minutes=15)
    assert Ranking.needs(RankingOptions(column="stars")) == {"stars": "metric"}
    det = Ranking(top=1, interval=timedelta(minutes=10))
    feed(det, 0, [10, 20, 50, 8])
    feed(det, 10, [10, 20, 50, 8])
    feed(det, 15, [10, 40, 50, 8])
    clone = pickle.loads(pickle.dumps(det))
    assert ranks(feed(clone, 20, [10, 40, 50, 8])) == [(1, "B", 100.0)]


def test_conformance() -> None:
    check_detector(lambda: Ranking(column="close", top=3, interval=timedelta(minutes=5)))
