"""The `anomaly` detector: causal, calibrated, robust, vectorized across keys."""

from __future__ import annotations

import pickle

import numpy as np
import numpy.typing as npt
import pytest

from signalmint.detectors.anomaly import Anomaly
from signalmint.errors import DetectorError
from signalmint.records import Frame, Scores

START = np.datetime64("2024-01-01T00:00", "ns")
FloatArray = npt.NDArray[np.float64]


def frame(keys: list[str], t: int | list[int], values: FloatArray | list[float], column: str = "value") -> Frame:
    times = START + np.array(t if isinstance(t, list) else [t] * len(keys)) * np.timedelta64(1, "h")
    return Frame(keys=np.array(keys), times=times, columns={column: np.asarray(values, dtype=np.float64)})


def run(det: Anomaly, values: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Feed ``values`` (bars, keys) one tick per frame; scores and flags as (bars, keys)."""
    keys = [f"k{i}" for i in range(values.shape[1])]
    out = [det.update(frame(keys, t, values[t])) for t in range(len(values))]
    return np.array([s.score for s in out]), np.array([s.flags for s in out])


def noisy(bars: int, keys: int, seed: int = 0) -> FloatArray:
    return 100.0 + np.random.default_rng(seed).normal(0.0, 1.0, (bars, keys))


# -- causality -----------------------------------------------------------------------------


def _series() -> FloatArray:
    x = noisy(400, 3, seed=1)
    x[150, 0] += 9.0  # a spike
    x[250:, 1] += 6.0  # a level shift
    x[300:340, 2] += np.random.default_rng(2).normal(0, 4, (40,))  # more variance
    return x


def test_scores_on_a_prefix_equal_the_scores_on_the_full_series() -> None:
    x = _series()
    full, _ = run(Anomaly(season=(24,)), x)
    prefix, _ = run(Anomaly(season=(24,)), x[:200])
    np.testing.assert_array_equal(prefix, full[:200])
    changed = x.copy()
    changed[200:] = 0.0  # a different future changes nothing before it
    np.testing.assert_array_equal(run(Anomaly(season=(24,)), changed)[0][:200], full[:200])


@pytest.mark.parametrize("batch", [1, 7, 400])
def test_any_batching_of_the_rows_gives_the_same_scores(batch: int) -> None:
    """Rows in time order, cut into frames of ``batch`` rows (a key may repeat in a frame)."""
    x = _series()
    expected, _ = run(Anomaly(), x)
    bars, keys = x.shape
    order = [(t, k) for t in range(bars) for k in range(keys)]
    det = Anomaly()
    got = np.full((bars, keys), -1.0)
    for lo in range(0, len(order), batch):
        part = order[lo : lo + batch]
        scores = det.update(frame([f"k{k}" for _, k in part], [t for t, _ in part], [x[t, k] for t, k in part]))
        for (t, k), score in zip(part, scores.score, strict=True):
            got[t, k] = score
    np.testing.assert_array_equal(got, expected)


def test_many_keys_at_once_equal_each_key_alone() -> None:
    x = _series()
    together, _ = run(Anomaly(season=(24,)), x)
    for k in range(x.shape[1]):
        alone, _ = run(Anomaly(season=(24,)), x[:, [k]])
        np.testing.assert_array_equal(alone[:, 0], together[:, k])


def test_a_pickled_detector_continues_identically() -> None:
    x = _series()
    det = Anomaly(season=(24,))
    run(det, x[:120])
    clone = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(run(clone, x[120:])[0], run(det, x[120:])[0])


# -- calibration ---------------------------------------------------------------------------


def test_scores_lie_in_the_unit_interval_and_are_about_uniform_under_noise() -> None:
    score, flags = run(Anomaly(), noisy(1500, 40, seed=3))
    assert np.all((score >= 0) & (score <= 1))
    assert np.all(score[:50] == 0)  # warm-up
    steady = score[300:]
    deciles = np.histogram(steady, bins=10, range=(0, 1))[0] / steady.size
    assert np.all(np.abs(deciles - 0.1) < 0.02), deciles
    assert 0.004 < np.mean(steady >= 0.99) < 0.02
    assert np.mean(flags[300:]) < 0.003  # the default threshold, 0.999


def test_heavy_tailed_and_quantized_series_do_not_alarm_constantly() -> None:
    rng = np.random.default_rng(4)
    for x in (
        rng.integers(0, 4, (1500, 40)).astype(np.float64),  # 0, 1, 2, 3
        rng.poisson(0.3, (1500, 40)).astype(np.float64),  # mostly zeros
        rng.standard_t(3, (1500, 40)),
    ):
        score, flags = run(Anomaly(), x)
        assert np.mean(score[300:] >= 0.99) < 0.025
        assert np.mean(flags[300:]) < 0.008


def test_scores_rise_with_the_size_of_the_anomaly() -> None:
    medians = []
    for size in (2.0, 4.0, 8.0):
        x = noisy(301, 200, seed=5)
        x[300] += size
        score, _ = run(Anomaly(), x)
        medians.append(float(np.median(score[300])))
    assert medians[0] < medians[1] < medians[2], medians
    assert medians[0] < 0.95 and medians[2] > 0.999


# -- robustness ----------------------------------------------------------------------------


def test_a_level_shift_alarms_then_becomes_the_new_baseline() -> None:
    x = noisy(1000, 20, seed=6)
    x[400:] += 6.0
    score, flags = run(Anomaly(), x)
    assert np.mean(flags[400:405].any(axis=0)) >= 0.9  # within 5 bars
    assert np.all(score[400:405].max(axis=0) > 0.99)  # every key in its top 1 %
    baseline = run_details(Anomaly(), x, "baseline")
    assert np.all(np.abs(baseline[450] - 106.0) < 1.0)  # re-baselined
    assert np.mean(flags[450:]) < 0.005  # no endless alerts
    assert np.mean(flags[:400][100:]) < 0.005


def run_details(det: Anomaly, values: FloatArray, name: str) -> FloatArray:
    keys = [f"k{i}" for i in range(values.shape[1])]
    return np.array([det.update(frame(keys, t, values[t])).details[name] for t in range(len(values))])


def test_a_daily_pattern_raises_no_alarm_at_its_regular_peaks() -> None:
    hours = np.arange(24 * 40)
    daily = 10.0 * np.sin(2 * np.pi * hours / 24) + 15.0 * (hours % 24 == 9)  # a sharp peak at 9:00
    x = 100.0 + daily[:, None] + np.random.default_rng(7).normal(0, 1, (len(hours), 20))
    x[24 * 30 + 15] += 8.0  # one real anomaly
    score, flags = run(Anomaly(season=(24,)), x)
    peaks = hours % 24 == 9
    after = hours >= 24 * 5
    assert np.mean(flags[peaks & after]) < 0.01
    assert np.mean(flags[after]) < 0.005
    assert np.median(score[24 * 30 + 15]) > 0.999
    # without the season, the daily pattern hides the anomaly
    plain, _ = run(Anomaly(), x)
    assert np.median(plain[24 * 30 + 15]) < 0.99


def test_daily_and_weekly_seasons_together() -> None:
    """Hourly data: a daily cycle, and weekends at a third of the weekday level.

    With a season much longer than ``halflife`` the level chases the weekends; a halflife of
    about the longest season (as README advises) lets the weekly slots carry them.
    """
    hours = np.arange(24 * 7 * 8)
    weekend = (hours // 24) % 7 >= 5
    pattern = (50.0 + 20.0 * np.sin(2 * np.pi * hours / 24)) * np.where(weekend, 1 / 3, 1.0)
    x = pattern[:, None] + np.random.default_rng(10).normal(0, 1, (len(hours), 10))
    monday_noon = 24 * 7 * 7 + 12
    x[monday_noon] -= 8.0  # one real anomaly: 8 sigmas, in a weekday
    score, flags = run(Anomaly(season=(24, 168), halflife=168), x)
    after = hours >= 24 * 7 * 3
    assert np.mean(flags[after]) < 0.005
    assert np.mean(flags[after & weekend]) < 0.005
    assert np.median(score[monday_noon]) > 0.99


def test_a_trend_is_followed() -> None:
    x = noisy(800, 20, seed=8) + 0.5 * np.arange(800)[:, None]  # half a sigma per bar
    _, flags = run(Anomaly(), x)
    assert np.mean(flags[100:]) < 0.005


# -- the arithmetic, by hand --------------------------------------------------------------


def test_the_baseline_update_by_hand() -> None:
    """halflife=1: alpha = 0.5; a running mean for the first bars, Huber clipping from bar 3."""
    det = Anomaly(halflife=1, trend=False, warmup=2)
    baselines, zs = [], []
    for t, value in enumerate([10.0, 12.0, 11.0, 14.0, 0.0]):
        scores = det.update(frame(["a"], t, [value]))
        baselines.append(scores.details["baseline"][0])
        zs.append(scores.details["z"][0])
    # bar 0: level 10, spread 0
    # bar 1: forecast 10, r = 2 -> level 10 + 0.5·2 = 11, spread 0 + 0.5·2 = 1
    # bar 2: forecast 11, r = 0 -> level 11, spread 1 + 0.5·(0 - 1) = 0.5
    # bar 3: forecast 11, r = 3, sigma = 1.2533·0.5, z = 3 / 0.62665; clipped at 3·sigma
    #        -> level 11 + 0.5·1.87995 = 11.939975
    assert np.isnan(baselines[0])
    np.testing.assert_allclose(baselines[1:], [10.0, 11.0, 11.0, 11.939975])
    np.testing.assert_allclose(zs[3], 3.0 / 0.62665)


def test_the_seasonal_update_by_hand() -> None:
    """A first visit of a slot sets it to the residual; later visits move it by the rate."""
    det = Anomaly(halflife=1, trend=False, season=(2,), warmup=2)
    baselines = [det.update(frame(["a"], t, [v])).details["baseline"][0] for t, v in enumerate([10.0, 20.0, 10.0, 0.0])]
    # bar 0 (slot 0): level 10, slot 0 = 0
    # bar 1 (slot 1): forecast 10, r = 10 -> level 15, slot 1 = 10
    # bar 2 (slot 0): forecast 15, r = -5 -> level 12.5, slot 0 = 0 + 0.5·(-5)
    # bar 3 (slot 1): forecast 12.5 + 10 = 22.5
    np.testing.assert_allclose(baselines[1:], [10.0, 15.0, 22.5])


# -- input ---------------------------------------------------------------------------------


def test_unusable_values_score_nan_and_leave_the_state_alone() -> None:
    x = noisy(120, 2, seed=9)
    det, reference = Anomaly(), Anomaly()
    run(det, x[:100])
    run(reference, x[:100])
    bad: Scores = det.update(frame(["k0", "k1"], 100, [np.nan, np.inf]))
    assert np.isnan(bad.score).all() and not bad.flags.any()
    np.testing.assert_array_equal(run(det, x[100:])[0], run(reference, x[100:])[0])


def test_the_column_is_an_option() -> None:
    det = Anomaly(column="volume")
    scores = det.update(frame(["a"], 0, [5.0], column="volume"))
    assert scores.score[0] == 0.0
    with pytest.raises(DetectorError, match="no 'volume' column"):
        det.update(frame(["a"], 1, [5.0]))


@pytest.mark.parametrize("options", [{"season": (1,)}, {"threshold": 0}, {"calibration": 4}, {"bogus": 1}])
def test_bad_options_are_a_detector_error(options: dict[str, object]) -> None:
    with pytest.raises((DetectorError, TypeError)):
        Anomaly(**options)  # type: ignore[arg-type]
