"""Cooldown: clears a key's flags within ``period`` of its last kept flag."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

import numpy as np
import pytest
from pydantic import BaseModel

from signalmint.detectors import Cooldown, VolumeSpike
from signalmint.errors import DetectorError
from signalmint.records import Frame, Scores
from signalmint.registry import Detector

START = np.datetime64("2024-01-02T14:30", "ns")


class NoOptions(BaseModel):
    pass


class FlagsWhenAsked:
    """A detector whose flag is the frame's ``flag`` column (so tests choose the flags)."""

    kind: ClassVar[str] = "flags_when_asked"
    Options: ClassVar[type[BaseModel]] = NoOptions

    def update(self, frame: Frame) -> Scores:
        flags = frame.columns["flag"] > 0
        score = frame.columns["flag"].copy()
        return Scores(frame.keys, frame.times, score, flags, {"flag": score})


def tick(minute: float, flagged: dict[str, bool]) -> Frame:
    return Frame(
        keys=np.array(list(flagged)),
        times=np.full(len(flagged), START + np.timedelta64(int(minute * 60), "s")),
        columns={"flag": np.array([float(f) for f in flagged.values()])},
    )


def kept(det: Cooldown, ticks: Sequence[Frame]) -> list[list[bool]]:
    return [det.update(f).flags.tolist() for f in ticks]


def test_suppresses_repeats_within_the_period() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=5))
    out = kept(det, [tick(m, {"A": True}) for m in (0, 1, 4.99, 5, 6, 9, 10.5)])
    # kept at 0; 1 and 4.99 are within 5 minutes; 5 is exactly 5 later: kept;
    # 6 and 9 are within 5 of 5; 10.5 is 5.5 after 5: kept
    assert out == [[True], [False], [False], [True], [False], [False], [True]]


def test_suppressed_flags_do_not_restart_the_cooldown() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=5))
    out = kept(det, [tick(m, {"A": True}) for m in (0, 3, 6)])
    assert out == [[True], [False], [True]]  # 6 is 6 after the kept flag at 0


def test_keys_are_independent() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=10))
    out = kept(
        det,
        [
            tick(0, {"A": True, "B": False}),
            tick(1, {"A": True, "B": True}),
            tick(2, {"A": False, "B": True}),
            tick(11, {"A": True, "B": True}),
        ],
    )
    assert out == [[True, False], [False, True], [False, False], [True, True]]


def test_unflagged_rows_and_scores_pass_untouched() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=10))
    det.update(tick(0, {"A": True}))
    scores = det.update(tick(1, {"A": True, "B": False}))
    assert scores.flags.tolist() == [False, False]
    assert scores.score.tolist() == [1.0, 0.0]
    assert scores.details["flag"].tolist() == [1.0, 0.0]


def test_a_key_twice_in_one_frame() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=1))
    assert det.update(tick(0, {"A": True})).flags.tolist() == [True]
    frame = Frame(
        keys=np.array(["A", "A"]),
        times=np.array([START + np.timedelta64(2, "m")] * 2),
        columns={"flag": np.array([1.0, 1.0])},
    )
    assert det.update(frame).flags.tolist() == [True, False]


def test_zero_period_passes_everything() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(0))
    assert kept(det, [tick(m, {"A": True}) for m in (0, 0, 1)]) == [[True], [True], [True]]


def test_bad_period() -> None:
    with pytest.raises(DetectorError, match="negative"):
        Cooldown(FlagsWhenAsked(), period=timedelta(seconds=-1))
    with pytest.raises(DetectorError, match="timedelta"):
        Cooldown(FlagsWhenAsked(), period=300)  # type: ignore[arg-type]


def test_pickles_with_its_state() -> None:
    det = Cooldown(FlagsWhenAsked(), period=timedelta(minutes=5))
    det.update(tick(0, {"A": True, "B": False}))
    clone = pickle.loads(pickle.dumps(det))
    later = [tick(2, {"A": True, "B": True}), tick(3, {"A": False, "B": True}), tick(6, {"A": True})]
    assert kept(clone, later) == kept(det, later) == [[False, True], [False, False], [True]]


def test_looks_like_the_inner_detector() -> None:
    inner = VolumeSpike(window=5)
    det: Detector = Cooldown(inner, period=timedelta(minutes=15))
    assert isinstance(det, Detector)
    assert det.kind == "volume_spike"
    assert det.Options is VolumeSpike.Options
    assert repr(det) == (
        "Cooldown(detector=VolumeSpike(window=5, ratio=3.0, z=4.0, volume_column='volume', "
        "price_column='close'), period=datetime.timedelta(seconds=900))"
    )


def test_with_volume_spike() -> None:
    base = [100.0, 110.0, 90.0, 105.0, 95.0]
    volumes = [*base, 1000.0, 100.0, 1000.0, *base, 1000.0]  # spikes at minutes 5, 7, 13
    plain = VolumeSpike(window=5)
    det = Cooldown(VolumeSpike(window=5), period=timedelta(minutes=5))
    raw, cooled = [], []
    for minute, v in enumerate(volumes):
        f = Frame(
            keys=np.array(["A"]),
            times=np.array([START + np.timedelta64(minute, "m")]),
            columns={"volume": np.array([v])},
        )
        raw.append(bool(plain.update(f).flags[0]))
        cooled.append(bool(det.update(f).flags[0]))
    assert [m for m, f in enumerate(raw) if f] == [5, 7, 13]
    assert [m for m, f in enumerate(cooled) if f] == [5, 13]
