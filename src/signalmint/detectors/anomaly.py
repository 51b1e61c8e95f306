"""A general streaming anomaly detector: a calibrated score in [0, 1] for any metric.

Each key keeps a constant-size state; every tick updates all the keys of a frame at once
with numpy. For a value ``x`` of a key, in this order (everything before step 5 uses only
the key's past)::

    1. forecast   f = level + trend + sum(seasonal[p][t % p] for p in season)
    2. residual   r = x - f;  z = r / (1.2533 * spread)        (spread: EW mean |r|)
    3. changes    zd = (d - d_prev) / (1.2533 * dspread), d = x - seasonal part: the bar's
                  deseasoned change (dspread: its EW mean |change|), a random walk's innovation
                  zc = clip(z, ±huber)  (a lone spike cannot confirm a shift)
                  cusum+ = max(0, cusum+ + zc - drift),  cusum- = max(0, cusum- - zc - drift)
                  variance = EW mean of min(z², 25)            (fast half-life)
    4. nonconformity  a = max(|z|, |zd|, 0.5 · max(cusum+, cusum-), 1.2 · sqrt(variance))
       score = 1 - p, with p the conformal p-value of ``a`` against the key's last
       ``calibration`` nonconformities (an exponential tail beyond their top 10 %)
    5. learning   rc = clip(r, ±huber · 1.2533 · spread)
                  level += alpha·rc,  trend += beta·rc,  seasonal slot += gamma·rc (seasons
                  shortest first, each from the residual the previous ones left),
                  spread += alpha·(min(|r|, huber · 1.2533 · spread) - spread)
                  a cusum above ``shift`` re-baselines the level by the mean residual of its
                  run (a confirmed level shift), then restarts; ``a`` joins the ring.

Methods: Holt-Winters in error-correction form with Huber-clipped errors (a robust seasonal
baseline with level and trend), an exponentially weighted mean absolute deviation for the
scale (of the residual, and of the bar's deseasoned change, which catches what a lagging
level hides on random-walk-like series such as prices), Page's two-sided CUSUM for level
shifts with re-baselining, an EW variance ratio for variance changes, and split-conformal
calibration of the nonconformity over a per-key ring (with a peaks-over-threshold
exponential tail, as in SPOT, so scores keep rising past the largest value seen). Under
normal data the score is about uniform on [0, 1]: one ``threshold`` means about the same
false-alarm rate on any series.

The seasonal slot is the key's bar count modulo the period (one bar, one step). A key
scores 0 during its first ``warmup`` bars (at least two of its longest season); a value that
is NaN or infinite scores NaN, never flags and leaves the key's state untouched.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DetectorError
from ..records import Frame, OutcomeRule, Scores
from ._keyed import update_in_rounds

__all__ = ["Anomaly", "AnomalyOptions"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: E|r| = sqrt(2/pi)·sigma for normal residuals: spread · 1.2533 estimates sigma.
_ABS_TO_SIGMA = 1.2533
#: The smallest spread, relative to the level (a flat series still divides safely).
_TINY = 1e-9
#: The fraction of the ring treated as the tail (exponential fit beyond it).
_TAIL = 0.1
#: ... but at least this many values (a short ring early in a key's life).
_TAIL_MIN = 5
#: Half-life, in bars, of the variance statistic.
_VARIANCE_HALFLIFE = 10.0
#: Weights of the CUSUM and of the variance statistic's square root in the nonconformity,
#: so that under normal data they rarely outrank |z| (their values cluster in time, which
#: would make the conformal p-values too small): measured on Gaussian noise and on
#: bench/anomaly.py.
_CUSUM_WEIGHT = 0.5
_VARIANCE_WEIGHT = 1.2
#: Weight of |zd|: 1.0 measured best on bench/anomaly.py (0.6 to 1.5 tried).
_CHANGE_WEIGHT = 1.0

DETAILS: tuple[str, ...] = ("value", "baseline", "z", "cusum", "variance", "nonconformity", "history")


class AnomalyOptions(BaseModel):
    """Settings of :class:`Anomaly` (its ``Options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("value", min_length=1, description="the column scored")
    season: tuple[int, ...] = Field((), description="seasonal periods in bars, e.g. (24, 168)")
    halflife: float = Field(20.0, gt=0, description="half-life in bars of level and spread")
    trend: bool = Field(True, description="follow a linear trend (Holt)")
    seasonal_rate: float = Field(0.1, gt=0, lt=1, description="weight of a residual in its seasonal slot")
    huber: float = Field(3.0, gt=0, description="residuals are clipped at this many sigmas before learning")
    drift: float = Field(0.5, ge=0, description="CUSUM allowance per bar, in sigmas")
    shift: float = Field(6.0, gt=0, description="CUSUM level that confirms a level shift and re-baselines")
    calibration: int = Field(256, ge=16, le=100_000, description="nonconformities kept per key")
    warmup: int = Field(50, ge=2, description="bars scored 0 before scores start")
    threshold: float = Field(0.999, gt=0, le=1, description="a score at or above it flags")


class Anomaly:
    """Anomaly scores in [0, 1] for the ``column`` of every key, calibrated per key.

    ``details`` carries ``value``, ``baseline`` (the forecast ``f``), ``z`` (the robust
    standardized residual), ``cusum`` (the larger side), ``variance`` (EW mean of z²),
    ``nonconformity`` and ``history`` (usable bars seen before this one).

    >>> det = Anomaly(warmup=20)
    >>> det  # doctest: +NORMALIZE_WHITESPACE
    Anomaly(column='value', season=(), halflife=20.0, trend=True, seasonal_rate=0.1, huber=3.0,
            drift=0.5, shift=6.0, calibration=256, warmup=20, threshold=0.999)
    >>> start = np.datetime64("2024-01-02T00:00", "ns")
    >>> rng = np.random.default_rng(0)
    >>> for t in range(60):
    ...     values = 100.0 + rng.normal(0, 1, 2)
    ...     if t == 59:
    ...         values[0] += 12.0
    ...     scores = det.update(Frame(
    ...         keys=np.array(["web", "api"]),
    ...         times=np.full(2, start + np.timedelta64(t, "h")),
    ...         columns={"value": values},
    ...     ))
    >>> scores.flags, bool(scores.score[0] > 0.999), bool(scores.score[1] < 0.99)
    (array([ True, False]), True, True)
    """

    kind: ClassVar[str] = "anomaly"
    Options: ClassVar[type[BaseModel]] = AnomalyOptions

    @classmethod
    def outcome(cls, options: AnomalyOptions) -> OutcomeRule:
        """Did the metric keep moving the anomaly's way (the sign of its ``z``: above or below the forecast)."""
        return OutcomeRule("continues", column=options.column, sign_of="z")

    def __init__(
        self,
        column: str = "value",
        season: tuple[int, ...] | list[int] = (),
        halflife: float = 20.0,
        trend: bool = True,
        seasonal_rate: float = 0.1,
        huber: float = 3.0,
        drift: float = 0.5,
        shift: float = 6.0,
        calibration: int = 256,
        warmup: int = 50,
        threshold: float = 0.999,
    ) -> None:
        try:
            options = AnomalyOptions(
                column=column,
                season=tuple(season),
                halflife=halflife,
                trend=trend,
                seasonal_rate=seasonal_rate,
                huber=huber,
                drift=drift,
                shift=shift,
                calibration=calibration,
                warmup=warmup,
                threshold=threshold,
            )
        except ValidationError as exc:
            raise DetectorError(f"Anomaly: invalid options\n{exc}") from None
        if any(p < 2 for p in options.season):
            raise DetectorError(f"Anomaly: every season must be at least 2 bars, got {list(options.season)}")
        self._configure(options)
        self._reset()

    def _configure(self, options: AnomalyOptions) -> None:
        self.column = options.column
        self.season = options.season
        self.halflife = options.halflife
        self.trend = options.trend
        self.seasonal_rate = options.seasonal_rate
        self.huber = options.huber
        self.drift = options.drift
        self.shift = options.shift
        self.calibration = options.calibration
        self.warmup = options.warmup
        self.threshold = options.threshold
        self._alpha = 1.0 - 0.5 ** (1.0 / options.halflife)
        self._beta = self._alpha * self._alpha if options.trend else 0.0
        self._lambda = 1.0 - 0.5 ** (1.0 / _VARIANCE_HALFLIFE)
        self._ready = max(options.warmup, 2 * max(options.season, default=0))
        self._offsets = np.cumsum((0, *options.season))  # columns of each season in _seasonal

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in AnomalyOptions.model_fields)
        return f"{type(self).__name__}({args})"

    # -- state -----------------------------------------------------------------------

    def _reset(self) -> None:
        """No keys yet. Key ``k`` owns row ``k`` of every state array."""
        self._rows: dict[Any, int] = {}
        self._n = 0
        self._level = np.zeros(0)
        self._slope = np.zeros(0)
        self._spread = np.zeros(0)
        self._count = np.zeros(0, dtype=np.int64)
        self._seasonal = np.zeros((0, int(self._offsets[-1])))
        self._cusum = np.zeros((0, 2))  # up, down
        self._run = np.zeros((0, 2))  # sum of the residuals since each side was last 0
        self._run_len = np.zeros((0, 2))
        self._variance = np.zeros(0)
        self._previous = np.zeros(0)
        self._dspread = np.zeros(0)
        self._ring = np.zeros((0, self.calibration))
        self._filled = np.zeros(0, dtype=np.int64)  # nonconformities written so far
        self._last_keys: npt.NDArray[Any] | None = None
        self._last_rows = np.zeros(0, dtype=np.intp)

    def __getstate__(self) -> dict[str, Any]:
        n = self._n
        state = {name: getattr(self, name)[:n].copy() for name in _STATE}
        state["options"] = {name: getattr(self, name) for name in AnomalyOptions.model_fields}
        state["keys"] = sorted(self._rows, key=self._rows.__getitem__)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._configure(AnomalyOptions(**state["options"]))
        self._reset()
        self._rows = {key: row for row, key in enumerate(state["keys"])}
        self._n = len(self._rows)
        for name in _STATE:
            setattr(self, name, state[name])

    def _rows_of(self, keys: npt.NDArray[Any]) -> IntArray:
        """The state rows of the keys (new keys get rows); the same keys as the last tick
        (the usual case) reuse its answer."""
        last = self._last_keys
        if last is not None and last.shape == keys.shape and np.array_equal(last, keys):
            return self._last_rows
        rows_map = self._rows
        found = np.empty(len(keys), dtype=np.intp)
        for i, key in enumerate(keys.tolist()):
            row = rows_map.get(key)
            if row is None:
                row = rows_map[key] = self._n
                self._n += 1
            found[i] = row
        if self._n > len(self._level):
            self._grow(self._n)
        self._last_keys, self._last_rows = keys.copy(), found
        return found

    def _grow(self, n: int) -> None:
        capacity = max(n, 2 * len(self._level), 16)
        for name in _STATE:
            old = getattr(self, name)
            grown = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    # -- update ----------------------------------------------------------------------

    def update(self, frame: Frame) -> Scores:
        """Score every row of ``frame`` against its key's past, then learn from it."""
        if self.column not in frame.columns:
            raise DetectorError(
                f"Anomaly: the frame has no {self.column!r} column "
                f"(it has {sorted(frame.columns)}); set column to one of them"
            )
        rows = self._rows_of(frame.keys)
        if len(rows) and np.bincount(rows).max() > 1:
            return update_in_rounds(frame, self.update, DETAILS)  # a key repeated: in rounds
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._update_unique(frame, rows)

    def _update_unique(self, frame: Frame, all_rows: IntArray) -> Scores:
        n = len(frame)
        value = np.asarray(frame.columns[self.column], dtype=np.float64)
        usable = np.isfinite(value)
        out = {name: np.full(n, np.nan) for name in DETAILS}
        score = np.full(n, np.nan)
        rows, x = all_rows[usable], value[usable]
        out["value"] = value.copy()
        if len(rows):
            parts = self._step(rows, x)
            score[usable] = parts.pop("score")
            for name, column in parts.items():
                out[name][usable] = column
        return Scores(frame.keys, frame.times, score, score >= self.threshold, out)

    def _step(self, rows: IntArray, x: FloatArray) -> dict[str, FloatArray]:
        count = self._count[rows]
        fresh = count == 0
        level = np.where(fresh, x, self._level[rows])
        slope = self._slope[rows]
        slots = self._slots(count)
        seasonal = self._seasonal[rows[:, None], slots] if slots.size else np.zeros((len(rows), 0))
        forecast = level + slope + seasonal.sum(axis=1)

        residual = x - forecast
        spread = self._spread[rows]
        sigma = np.maximum(_ABS_TO_SIGMA * spread, _TINY * (np.abs(level) + 1.0))
        z = residual / sigma
        z[residual == 0] = 0.0
        z[fresh] = 0.0
        bounded = np.clip(z, -1e6, 1e6)

        # the bar's change net of its season, against the EW mean absolute change (the
        # innovation of a random walk)
        deseasoned = x - seasonal.sum(axis=1)
        change = deseasoned - np.where(fresh, deseasoned, self._previous[rows])
        dspread = self._dspread[rows]
        dsigma = np.maximum(_ABS_TO_SIGMA * dspread, _TINY * (np.abs(level) + 1.0))
        zd = change / dsigma
        zd[(change == 0) | (count < 2)] = 0.0

        # the change statistics start once the spread is estimated, half-way through warm-up
        started = (count >= self._ready // 2)[:, None]
        cusum = self._cusum[rows]
        step = np.clip(z, -self.huber, self.huber)  # one spike alone cannot confirm a shift
        cusum[:, 0] = np.maximum(0.0, cusum[:, 0] + step - self.drift)
        cusum[:, 1] = np.maximum(0.0, cusum[:, 1] - step - self.drift)
        cusum *= started
        lam = self._lambda
        variance = (1 - lam) * self._variance[rows] + lam * np.minimum(z * z, 25.0)
        variance = np.where(started[:, 0], variance, 1.0)
        nonconformity = np.maximum(np.abs(bounded), _CUSUM_WEIGHT * cusum.max(axis=1))
        nonconformity = np.maximum(nonconformity, _VARIANCE_WEIGHT * np.sqrt(variance))
        nonconformity = np.maximum(nonconformity, _CHANGE_WEIGHT * np.abs(np.clip(zd, -1e6, 1e6)))

        ready = count >= self._ready
        score = np.zeros(len(rows))
        if ready.any():
            score[ready] = self._calibrate(rows[ready], nonconformity[ready])

        # -- learn (robust Holt-Winters, error-correction form) --
        early = np.maximum(self._alpha, 1.0 / (count + 1.0))  # a running mean at first
        limit = self.huber * sigma
        clipped = np.where(count < 3, residual, np.clip(residual, -limit, limit))
        self._level[rows] = level + early * clipped
        self._slope[rows] = slope + self._beta * clipped * (count >= 3)
        if slots.size:
            self._learn_seasons(rows, count, slots, seasonal, residual, clipped)
        absolute = np.where(count < 3, np.abs(residual), np.minimum(np.abs(residual), limit))
        self._spread[rows] = np.where(fresh, 0.0, spread + np.maximum(early, self._alpha) * (absolute - spread))
        self._variance[rows] = variance
        dlimit = self.huber * dsigma
        dabs = np.where(count < 3, np.abs(change), np.minimum(np.abs(change), dlimit))
        self._dspread[rows] = np.where(
            fresh, 0.0, dspread + np.maximum(1.0 / count.clip(1), self._alpha) * (dabs - dspread)
        )
        self._previous[rows] = deseasoned

        run = self._run[rows] + residual[:, None]
        run_len = self._run_len[rows] + 1.0
        run[cusum == 0] = 0.0
        run_len[cusum == 0] = 0.0
        larger = cusum.max(axis=1)
        confirmed = (cusum >= self.shift) & ready[:, None]
        if confirmed.any():
            hit = confirmed.any(axis=1)
            side = np.where(confirmed[:, 0], 0, 1)[hit]
            at = rows[hit]
            self._level[at] += run[hit, side] / run_len[hit, side]  # the run's mean residual
            self._slope[at] = 0.0
            self._variance[at] = 1.0  # the shift's residuals were not noise
            cusum[hit] = 0.0
            run[hit] = 0.0
            run_len[hit] = 0.0
        self._cusum[rows] = cusum
        self._run[rows] = run
        self._run_len[rows] = run_len
        self._count[rows] = count + 1

        keep = count >= self._ready // 2
        if keep.any():
            at = rows[keep]
            self._ring[at, self._filled[at] % self.calibration] = nonconformity[keep]
            self._filled[at] += 1

        return {
            "score": score,
            "baseline": np.where(fresh, np.nan, forecast),
            "z": z,
            "cusum": larger,
            "variance": variance,
            "nonconformity": nonconformity,
            "history": count.astype(np.float64),
        }

    def _learn_seasons(
        self,
        rows: IntArray,
        count: npt.NDArray[np.int64],
        slots: IntArray,
        seasonal: FloatArray,
        residual: FloatArray,
        clipped: FloatArray,
    ) -> None:
        """Each season's slot takes its share of the residual, shortest season first; the
        next season learns from what is left, so together they never take more than all of
        it. A slot's first visit takes its whole share (unclipped), later visits a running
        mean until the rate is down to ``seasonal_rate``."""
        left_raw, left = residual.copy(), clipped.copy()
        for j in np.argsort(self.season, kind="stable"):
            visits = count // self.season[j]
            rate = np.maximum(self.seasonal_rate, 1.0 / (visits + 1.0))
            share = rate * np.where(visits == 0, left_raw, left)
            self._seasonal[rows, slots[:, j]] = seasonal[:, j] + share
            left_raw -= share
            left -= share

    def _slots(self, count: npt.NDArray[np.int64]) -> IntArray:
        """The seasonal column of each key's current bar, one per season: (keys, seasons)."""
        if not self.season:
            return np.zeros((len(count), 0), dtype=np.intp)
        periods = np.array(self.season, dtype=np.int64)
        slots: IntArray = (self._offsets[:-1] + count[:, None] % periods).astype(np.intp)
        return slots

    def _calibrate(self, rows: IntArray, a: FloatArray) -> FloatArray:
        """``1 - p``: the conformal p-value of ``a`` against each key's ring.

        ``p = (1 + #{past >= a}) / (m + 1)`` over the ``m`` past values, except in the top
        ``_TAIL`` of them, where ``p = k / (m + 1) · exp(-(a - u) / mean_excess)`` (``u``
        the ``k``-th largest, an exponential peaks-over-threshold tail).
        """
        m = np.minimum(self._filled[rows], self.calibration)
        ring = self._ring[rows]
        valid = np.arange(self.calibration)[None, :] < m[:, None]
        above = ((ring >= a[:, None]) & valid).sum(axis=1)
        p = (1.0 + above) / (m + 1.0)
        k = np.maximum(np.minimum(_TAIL_MIN, m), np.floor(_TAIL * m)).astype(np.intp)
        tail = np.flatnonzero((above < k) & (m > 0))
        if len(tail):
            part = np.where(valid[tail], ring[tail], -np.inf)
            part = -np.sort(-part, axis=1)  # descending
            kk = k[tail]
            u = part[np.arange(len(tail)), kk - 1]
            top = np.arange(self.calibration)[None, :] < kk[:, None] - 1
            excess = np.where(top, part - u[:, None], 0.0).sum(axis=1) / np.maximum(kk - 1, 1)
            excess = np.maximum(excess, 1e-3 * (np.abs(u) + 1.0))
            p[tail] = kk / (m[tail] + 1.0) * np.exp(-np.maximum(a[tail] - u, 0.0) / excess)
        score: FloatArray = np.clip(1.0 - p, 0.0, 1.0)
        return score


#: Per-key arrays, all indexed by row first (saved in checkpoints).
_STATE = (
    "_level",
    "_slope",
    "_spread",
    "_count",
    "_seasonal",
    "_cusum",
    "_run",
    "_run_len",
    "_variance",
    "_previous",
    "_dspread",
    "_ring",
    "_filled",
)
