"""VolumeSpike: hand-computed cases, a plain reference implementation, spikes found, records kept."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalmint.detectors import VolumeSpike
from signalmint.detectors import volume_spike as module
from signalmint.errors import DetectorError
from signalmint.records import Frame, Scores

DETAILS = ("volume", "baseline", "ratio", "z", "mad", "price_change", "history")
START = np.datetime64("2024-01-02T14:30", "ns")


def frame(
    keys: Sequence[str],
    volumes: Sequence[float],
    minute: int = 0,
    closes: Sequence[float] | None = None,
) -> Frame:
    columns = {"volume": np.array(volumes, dtype=np.float64)}
    if closes is not None:
        columns["close"] = np.array(closes, dtype=np.float64)
    return Frame(
        keys=np.array(keys),
        times=np.full(len(keys), START + np.timedelta64(minute, "m")),
        columns=columns,
    )


def stream(detector: VolumeSpike, key: str, volumes: Sequence[float]) -> list[Scores]:
    """One key, one bar per tick."""
    return [detector.update(frame([key], [v], minute=t)) for t, v in enumerate(volumes)]


def detail(scores: Scores, name: str) -> float:
    return float(scores.details[name][0])


# -- the reference: the rule written out directly, one row at a time ---------------------


def reference(frames: Sequence[Frame], window: int, ratio: float, z: float) -> list[dict[str, np.ndarray]]:
    history: dict[str, list[float]] = {}
    last_price: dict[str, float] = {}
    out = []
    for fr in frames:
        n = len(fr)
        rows = {name: np.full(n, np.nan) for name in DETAILS}
        rows["flags"] = np.zeros(n)
        closes = fr.columns.get("close")
        for i, key in enumerate(fr.keys.tolist()):
            v = float(fr.columns["volume"][i])
            past = history.setdefault(key, [])
            rows["volume"][i] = v
            rows["history"][i] = len(past)
            valid = math.isfinite(v) and 0 <= v < 1e300
            if valid and len(past) >= window:
                w = np.array(past[-window:])
                med = float(np.median(w))
                rows["baseline"][i] = med
                if med > 0:
                    r = v / med
                    rows["ratio"][i] = r
                    if r >= ratio:
                        mad = float(np.median(np.abs(w - med)))
                        diff = v - med
                        if diff == 0:
                            zz = 0.0
                        elif mad == 0:
                            zz = math.copysign(math.inf, diff)
                        else:
                            zz = diff / (1.4826 * mad)
                        rows["mad"][i] = mad
                        rows["z"][i] = zz
                        rows["flags"][i] = zz >= z
            price = float(closes[i]) if closes is not None else math.nan
            previous = last_price.get(key, math.nan)
            if math.isfinite(price) and math.isfinite(previous) and previous != 0:
                rows["price_change"][i] = (price - previous) / previous
            last_price[key] = price
            if valid:
                past.append(v)
        out.append(rows)
    return out


def assert_matches(got: Sequence[Scores], want: Sequence[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for t, (scores, expected) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(scores.flags, expected["flags"].astype(bool), f"tick {t}")
        np.testing.assert_allclose(scores.score, expected["z"], rtol=1e-12, err_msg=f"tick {t}")
        for name in DETAILS:
            np.testing.assert_allclose(scores.details[name], expected[name], rtol=1e-12, err_msg=f"tick {t}: {name}")


def random_stream(seed: int, n_keys: int, ticks: int) -> list[Frame]:
    """Keys that skip ticks, join late, arrive shuffled or few at a time; spikes, ties,
    zeros and a few unusable volumes."""
    rng = np.random.default_rng(seed)
    names = np.array([f"K{i:04d}" for i in range(n_keys)])
    level = rng.uniform(2, 9, n_keys)
    close = np.full(n_keys, 20.0)
    frames = []
    for t in range(ticks):
        joined = n_keys if t >= ticks // 3 else (2 * n_keys) // 3
        present = rng.random(joined) > 0.15
        if t % 9 == 4:  # a sparse tick: only a handful of keys
            present &= rng.random(joined) < 0.02
        rows = np.flatnonzero(present)
        if t % 5 == 2:
            rows = rng.permutation(rows)
        volume = np.round(rng.lognormal(level[rows], 0.5))  # integers: ties happen
        volume[rng.random(len(rows)) < 0.03] *= rng.uniform(5, 30)
        volume[rng.random(len(rows)) < 0.01] = 0.0
        volume[rng.random(len(rows)) < 0.005] = np.nan
        volume[rng.random(len(rows)) < 0.002] = -1.0
        close[rows] *= np.exp(rng.normal(0, 0.01, len(rows)))
        price = close[rows].copy()
        price[rng.random(len(rows)) < 0.01] = 0.0
        frames.append(
            Frame(
                keys=names[rows],
                times=np.full(len(rows), START + np.timedelta64(t, "m")),
                columns={"volume": volume, "close": price},
            )
        )
    return frames


# -- hand-computed cases (W = 5, ratio = 3, z = 4 unless said) ----------------------------


def test_no_score_before_the_window_is_full() -> None:
    det = VolumeSpike(window=5)
    out = stream(det, "A", [10, 12, 8, 11, 9, 1000])
    for t, scores in enumerate(out[:5]):
        assert not scores.flags[0]
        assert math.isnan(float(scores.score[0]))
        assert math.isnan(detail(scores, "baseline"))
        assert detail(scores, "history") == t
    # the 6th bar is the first with 5 bars of history: [8, 9, 10, 11, 12], median 10
    assert detail(out[5], "baseline") == 10.0
    assert out[5].flags[0]


def test_flag_exactly_at_the_ratio_threshold() -> None:
    det = VolumeSpike(window=5)
    *_, last = stream(det, "A", [10, 12, 8, 11, 9, 30])
    # window sorted [8, 9, 10, 11, 12]: med = 10
    # |w - 10| = [2, 1, 0, 1, 2] -> sorted [0, 1, 1, 2, 2]: mad = 1
    # ratio = 30 / 10 = 3.0 (>= 3 passes), z = (30 - 10) / (1.4826 * 1) = 13.49
    assert detail(last, "baseline") == 10.0
    assert detail(last, "mad") == 1.0
    assert detail(last, "ratio") == 3.0
    assert detail(last, "z") == pytest.approx(20 / 1.4826)
    assert float(last.score[0]) == detail(last, "z")
    assert last.flags[0]


def test_flag_exactly_at_the_z_threshold() -> None:
    z = 20 / 1.4826  # the z of the bar above, as the detector computes it
    det = VolumeSpike(window=5, z=z)
    *_, last = stream(det, "A", [10, 12, 8, 11, 9, 30])
    assert detail(last, "z") == z
    assert last.flags[0]
    det = VolumeSpike(window=5, z=math.nextafter(z, math.inf))
    *_, last = stream(det, "A", [10, 12, 8, 11, 9, 30])
    assert not last.flags[0]


def test_ratio_passes_but_z_fails() -> None:
    det = VolumeSpike(window=5)
    *_, last = stream(det, "A", [10, 40, 5, 60, 8, 35])
    # sorted [5, 8, 10, 40, 60]: med = 10; |w - 10| = [5, 2, 0, 30, 50] -> mad = 5
    # ratio = 35 / 10 = 3.5 passes; z = 25 / (1.4826 * 5) = 25 / 7.413 = 3.37 < 4
    assert detail(last, "ratio") == 3.5
    assert detail(last, "mad") == 5.0
    assert detail(last, "z") == pytest.approx(25 / 7.413)
    assert not last.flags[0]


def test_z_would_pass_but_ratio_fails() -> None:
    det = VolumeSpike(window=5)
    *_, last = stream(det, "A", [100, 102, 98, 101, 99, 150])
    # med = 100, mad = median([0, 2, 2, 1, 1]) = 1, so z would be 50 / 1.4826 = 33.7,
    # but ratio = 150 / 100 = 1.5 < 3: no flag, and the MAD is not even computed
    assert detail(last, "baseline") == 100.0
    assert detail(last, "ratio") == 1.5
    assert math.isnan(detail(last, "z")) and math.isnan(detail(last, "mad"))
    assert not last.flags[0]


def test_even_window_median_is_the_mean_of_the_middle_two() -> None:
    det = VolumeSpike(window=4)
    *_, last = stream(det, "A", [40, 10, 30, 20, 100])
    # sorted [10, 20, 30, 40]: med = (20 + 30) / 2 = 25
    # |w - 25| = [15, 5, 5, 15] -> mad = (5 + 15) / 2 = 10
    # ratio = 100 / 25 = 4, z = 75 / (1.4826 * 10) = 5.06
    assert detail(last, "baseline") == 25.0
    assert detail(last, "mad") == 10.0
    assert detail(last, "ratio") == 4.0
    assert detail(last, "z") == pytest.approx(75 / 14.826)
    assert last.flags[0]


def test_zero_median_never_flags_and_does_not_warn() -> None:
    det = VolumeSpike(window=5)
    *_, last = stream(det, "A", [0, 0, 0, 5, 0, 1000])
    # sorted [0, 0, 0, 0, 5]: med = 0, so v / med is undefined: ratio NaN, no flag
    assert detail(last, "baseline") == 0.0
    assert math.isnan(detail(last, "ratio"))
    assert not last.flags[0]
    *_, last = stream(VolumeSpike(window=5), "B", [0, 0, 0, 0, 0, 0])
    assert math.isnan(detail(last, "ratio")) and not last.flags[0]


def test_flat_window_gives_infinite_z_but_still_needs_the_ratio() -> None:
    flat = [10, 10, 10, 10, 10]  # med = 10, mad = 0
    *_, last = stream(VolumeSpike(window=5), "A", [*flat, 30])
    assert detail(last, "mad") == 0.0
    assert detail(last, "z") == math.inf  # ratio 3.0 passes, z = 20 / 0 = +inf
    assert last.flags[0]
    *_, last = stream(VolumeSpike(window=5), "A", [*flat, 29])
    assert detail(last, "ratio") == 2.9 and not last.flags[0]
    # with a low ratio bar the other signs show: below the median -inf, at it 0
    *_, last = stream(VolumeSpike(window=5, ratio=0.5), "A", [*flat, 8])
    assert detail(last, "z") == -math.inf and not last.flags[0]
    *_, last = stream(VolumeSpike(window=5, ratio=0.5), "A", [*flat, 10])
    assert detail(last, "z") == 0.0 and not last.flags[0]


def test_the_spike_joins_the_history() -> None:
    det = VolumeSpike(window=5)
    out = stream(det, "A", [10, 10, 10, 10, 10, 100, 100])
    assert out[5].flags[0]
    # the window of the 7th bar is [10, 10, 10, 10, 100]: still median 10, mad 0
    assert detail(out[6], "baseline") == 10.0
    assert detail(out[6], "history") == 6.0


def test_unusable_volumes_are_skipped() -> None:
    det = VolumeSpike(window=3)
    out = stream(det, "A", [10, math.nan, 10, -5, math.inf, 10, 40])
    assert [detail(s, "history") for s in out] == [0, 1, 1, 2, 2, 2, 3]
    assert all(math.isnan(float(s.score[0])) for s in out[:6])
    assert detail(out[6], "baseline") == 10.0 and out[6].flags[0]


def test_price_change() -> None:
    det = VolumeSpike(window=3)
    f0 = det.update(frame(["A", "B"], [1, 1], 0, closes=[10.0, 0.0]))
    f1 = det.update(frame(["A", "B"], [1, 1], 1, closes=[11.0, 5.0]))
    f2 = det.update(frame(["A"], [1], 2))  # no close column in this frame
    f3 = det.update(frame(["A"], [1], 3, closes=[12.0]))
    assert np.isnan(f0.details["price_change"]).all()  # no previous bar
    assert f1.details["price_change"][0] == pytest.approx(0.1)  # (11 - 10) / 10
    assert np.isnan(f1.details["price_change"][1])  # the previous price was 0
    assert np.isnan(f2.details["price_change"][0])
    assert np.isnan(f3.details["price_change"][0])  # the previous bar had no price


def test_keys_are_independent() -> None:
    det = VolumeSpike(window=3)
    for t, (a, b) in enumerate([(10, 100), (10, 100), (10, 100)]):
        det.update(frame(["A", "B"], [a, b], t))
    out = det.update(frame(["B", "A"], [300, 30], 3))
    assert out.details["baseline"].tolist() == [100.0, 10.0]
    assert out.flags.tolist() == [True, True]


# -- against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("block", [None, 16])
def test_matches_the_reference_on_random_streams(block: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if block is not None:  # small blocks: many of them, partly filled, with few keys
        monkeypatch.setattr(module, "_BLOCK", block)
    frames = random_stream(seed=7, n_keys=1300 if block is None else 150, ticks=45)
    det = VolumeSpike(window=8, ratio=2.5, z=3.0)
    got = [det.update(f) for f in frames]
    assert sum(int(s.flags.sum()) for s in got) > 20
    assert_matches(got, reference(frames, window=8, ratio=2.5, z=3.0))


def steady_stream(seed: int, n_keys: int, ticks: int) -> list[Frame]:
    """The common case, with its turns: every key every tick in the same order; then one
    tick missing a key, new keys joining at the end, and a tick of the old keys only."""
    rng = np.random.default_rng(seed)
    names = np.array([f"S{i:04d}" for i in range(n_keys + 10)])
    frames = []
    for t in range(ticks):
        count = n_keys if t < ticks // 2 else n_keys + 10
        rows = np.arange(count)
        if t == ticks // 3:
            rows = rows[rows != 5]
        if t == (3 * ticks) // 4:
            rows = rows[:n_keys]
        volume = np.round(rng.lognormal(6, 0.4, len(rows)))
        volume[rng.random(len(rows)) < 0.02] *= 10
        frames.append(
            Frame(
                keys=names[rows],
                times=np.full(len(rows), START + np.timedelta64(t, "m")),
                columns={"volume": volume, "close": rng.uniform(9, 11, len(rows))},
            )
        )
    return frames


@pytest.mark.parametrize("window", [5, 12])
def test_matches_the_reference_on_a_steady_stream(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_BLOCK", 32)
    frames = steady_stream(seed=5, n_keys=100, ticks=60)
    det = VolumeSpike(window=window)
    got = [det.update(f) for f in frames]
    assert sum(int(s.flags.sum()) for s in got) > 20
    assert_matches(got, reference(frames, window=window, ratio=3.0, z=4.0))


def test_default_options_match_the_reference() -> None:
    frames = random_stream(seed=3, n_keys=40, ticks=90)
    det = VolumeSpike()
    got = [det.update(f) for f in frames]
    assert_matches(got, reference(frames, window=30, ratio=3.0, z=4.0))


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(3, 6),
    ratio=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    z=st.sampled_from([0.5, 2.0, 4.0]),
    ticks=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from("abc"),
                st.one_of(
                    st.integers(0, 12).map(float),
                    st.sampled_from([100.0, 1e6, math.nan, -1.0]),
                ),
            ),
            max_size=5,
        ),
        max_size=25,
    ),
)
def test_property_matches_the_reference(
    window: int, ratio: float, z: float, ticks: list[list[tuple[str, float]]]
) -> None:
    frames = [
        frame([k for k, _ in rows], [v for _, v in rows], t, closes=[float(t + 1)] * len(rows))
        for t, rows in enumerate(ticks)
    ]
    det = VolumeSpike(window=window, ratio=ratio, z=z)
    assert_matches([det.update(f) for f in frames], reference(frames, window, ratio, z))


# -- spikes are found ----------------------------------------------------------------------


def test_finds_injected_spikes() -> None:
    rng = np.random.default_rng(11)
    keys, ticks, window = 300, 400, 30
    level = rng.uniform(5, 12, keys)
    volume = rng.lognormal(level, 0.35, (ticks, keys))
    spikes = np.zeros((ticks, keys), dtype=bool)
    for k in range(keys):  # spikes of 8-20x, more than a window apart
        at = window + rng.integers(0, 20)
        while at < ticks:
            spikes[at, k] = True
            volume[at, k] = np.exp(level[k]) * rng.uniform(8, 20)
            at += window + 1 + rng.integers(0, 40)
    names = np.array([f"S{i}" for i in range(keys)])
    det = VolumeSpike(window=window)
    flags = np.array([det.update(frame(names.tolist(), volume[t].tolist(), t)).flags for t in range(ticks)])
    recall = flags[spikes].mean()
    assert spikes.sum() > 1000
    assert recall >= 0.99
    assert flags[~spikes].mean() < 0.01


# -- records: no mutation, determinism, pickling, repeats ----------------------------------


def test_does_not_mutate_its_input() -> None:
    frames = random_stream(seed=1, n_keys=60, ticks=40)
    before = copy.deepcopy(frames)
    det = VolumeSpike(window=5)
    for f in frames:
        det.update(f)
    for a, b in zip(frames, before, strict=True):
        np.testing.assert_array_equal(a.keys, b.keys)
        np.testing.assert_array_equal(a.times, b.times)
        for name in b.columns:
            np.testing.assert_array_equal(a.columns[name], b.columns[name])


def test_same_input_same_scores() -> None:
    frames = random_stream(seed=2, n_keys=80, ticks=40)
    first, second = VolumeSpike(window=6), VolumeSpike(window=6)
    one = [first.update(f) for f in frames]
    two = [second.update(f) for f in frames]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.flags, b.flags)
        for name in DETAILS:
            np.testing.assert_array_equal(a.details[name], b.details[name])


def test_pickle_mid_stream_continues_identically() -> None:
    frames = random_stream(seed=4, n_keys=120, ticks=60)
    det = VolumeSpike(window=7)
    for f in frames[:30]:
        det.update(f)
    clone = pickle.loads(pickle.dumps(det))
    assert repr(clone) == repr(det)
    for f in frames[30:]:
        a, b = det.update(f), clone.update(f)
        np.testing.assert_array_equal(a.flags, b.flags)
        for name in DETAILS:
            np.testing.assert_array_equal(a.details[name], b.details[name])


def test_pickle_is_compact() -> None:
    det = VolumeSpike(window=30)
    det.update(frame(["A", "B", "C"], [1, 2, 3]))
    assert len(pickle.dumps(det)) < 5_000  # not the whole capacity of the store


def test_a_repeated_key_is_two_consecutive_ticks() -> None:
    history = [frame(["A", "B"], [10 + t, 20 + t], t) for t in range(5)]
    together = frame(["A", "B", "A"], [50, 21, 60], 5)
    one = VolumeSpike(window=4)
    two = VolumeSpike(window=4)
    for f in history:
        one.update(f)
        two.update(f)
    got = one.update(together)
    first = two.update(frame(["A", "B"], [50, 21], 5))
    second = two.update(frame(["A"], [60], 5))
    np.testing.assert_array_equal(got.keys, together.keys)
    for name in DETAILS:
        want = np.concatenate([first.details[name], second.details[name]])
        np.testing.assert_array_equal(got.details[name], want)
    np.testing.assert_array_equal(got.flags, np.concatenate([first.flags, second.flags]))


def test_empty_frame() -> None:
    det = VolumeSpike()
    scores = det.update(Frame.empty())
    assert len(scores) == 0 and set(scores.details) == set(DETAILS)


# -- options ------------------------------------------------------------------------------


def test_options_and_repr() -> None:
    det = VolumeSpike(window=10, ratio=2.5, z=3, volume_column="vol", price_column="last")
    assert VolumeSpike.kind == "volume_spike"
    assert repr(det) == ("VolumeSpike(window=10, ratio=2.5, z=3.0, volume_column='vol', price_column='last')")
    options = VolumeSpike.Options.model_validate({"window": 10, "ratio": 2.5})
    assert VolumeSpike(**options.model_dump()).window == 10
    with pytest.raises(DetectorError, match="window"):
        VolumeSpike(window=2)
    with pytest.raises(DetectorError, match="ratio"):
        VolumeSpike(ratio=0)


def test_custom_columns_and_a_missing_column() -> None:
    det = VolumeSpike(window=3, volume_column="vol")
    with pytest.raises(DetectorError, match="'vol'"):
        det.update(frame(["A"], [1.0]))
    fr = Frame(keys=np.array(["A"]), times=np.array([START]), columns={"vol": np.array([5.0])})
    assert det.update(fr).details["volume"][0] == 5.0
