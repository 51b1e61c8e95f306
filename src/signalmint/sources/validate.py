"""Row validation shared by every source: bad rows are dropped and counted, never raised.

A :class:`RowValidator` remembers, per key, the time of the last row it
accepted and checks a whole candidate :class:`~signalmint.records.Frame` at
once with numpy. Each rejected row is counted under exactly one reason (the
first that applies, in the order of :data:`REASONS`), so accepted plus rejected
always equals the input:

``bad_timestamp``
    a time that cannot be parsed (or ``NaT``)
``naive_timestamp``
    a time without a timezone when the source was given none (parse level)
``bad_value``
    text where a number was expected, or an empty key (parse level); a value of a
    text column that is neither a ``str`` nor ``None``
``nan``
    a NaN or missing value in open, high, low, close or volume
``inf``
    an infinite value in one of those columns, or in a metric column
``negative_volume``
    volume < 0 (zero volume is a valid bar)
``negative_price``
    open, high, low or close <= 0
``high_lt_low``
    high < low
``inconsistent_ohlc``
    high < max(open, close) or low > min(open, close)

The value rules follow the kind of each column in the source's ``schema`` (market bars
when none is given): the bar rules above apply to ``bar`` columns only (``high_lt_low``
and ``inconsistent_ohlc`` when all four prices are bar columns); a ``metric`` column
refuses infinities but keeps NaN, which means missing (a shop page without a price);
a ``text`` column holds ``str`` or ``None`` (missing). A column the schema declares but
the frame lacks is the source's bug, a :class:`ValueError`.
``out_of_order``
    time earlier than the last accepted time of that key
``duplicate``
    time equal to the last accepted time of that key (within a batch the
    first row of a (key, time) pair wins)

Rows of one key are judged in the order they appear in the batch, so a batch
may hold several times per key. Rejections go to a :class:`collections.Counter`
owned by the source and to the ``signalmint.sources`` logger at WARNING, at
most one line per ``log_every`` seconds, each summing the counts since the last
line (call :meth:`RowValidator.flush` at the end of a stream).

>>> import numpy as np
>>> v = RowValidator(source="demo")
>>> t = np.array(["2024-01-02T09:30", "2024-01-02T09:30"], dtype="datetime64[ns]")
>>> ok = v.check(Frame(keys=np.array(["A", "A"]), times=t,
...     columns={c: np.array([1.0, 1.0]) for c in BAR_COLUMNS}))
>>> len(ok), dict(v.rejected)
(1, {'duplicate': 1})
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..records import BAR_COLUMNS, BAR_SCHEMA, Frame, Schema

__all__ = ["REASONS", "RowValidator"]

logger = logging.getLogger("signalmint.sources")

#: Every rejection reason, in the order they are tested.
REASONS: tuple[str, ...] = (
    "bad_timestamp",
    "naive_timestamp",
    "bad_value",
    "nan",
    "inf",
    "negative_volume",
    "negative_price",
    "high_lt_low",
    "inconsistent_ohlc",
    "out_of_order",
    "duplicate",
)

_NAT = np.iinfo(np.int64).min  # what NaT is as int64; also "no time seen yet"


class RowValidator:
    """Checks candidate rows against value rules and each key's last accepted time.

    ``rejected`` is the counter rejections are added to (pass the source's own
    so its ``rejected`` property sees them); ``source`` names the source in log
    lines; ``schema`` gives each column's kind (market bars by default); ``clock``
    (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        rejected: Counter[str] | None = None,
        *,
        source: str = "source",
        schema: Schema = BAR_SCHEMA,
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rejected: Counter[str] = rejected if rejected is not None else Counter()
        self.source = source
        self.schema = dict(schema)
        self._bars = tuple(c for c in BAR_COLUMNS if self.schema.get(c) == "bar")
        self._metrics = tuple(c for c, kind in self.schema.items() if kind == "metric")
        self._texts = tuple(c for c, kind in self.schema.items() if kind == "text")
        self.log_every = log_every
        self._clock = clock
        self._keys: npt.NDArray[np.str_] = np.array([], dtype=str)  # sorted
        self._last: npt.NDArray[np.int64] = np.array([], dtype=np.int64)
        self._pending: Counter[str] = Counter()
        self._logged_at: float | None = None

    def last_time(self, key: str) -> np.datetime64 | None:
        """The time of the last accepted row of ``key``, if any."""
        i = int(np.searchsorted(self._keys, key))
        if i < len(self._keys) and self._keys[i] == key:
            return np.datetime64(int(self._last[i]), "ns")
        return None

    def reject(self, reason: str, count: int = 1) -> None:
        """Count rows a source rejected itself (parse-level reasons)."""
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        if count > 0:
            self._record(Counter({reason: count}))

    def check(self, frame: Frame) -> Frame:
        """The rows of ``frame`` that pass; the others are counted and logged."""
        n = len(frame)
        if n == 0:
            return frame
        reason = np.full(n, -1, dtype=np.int8)  # index into REASONS, -1 = accepted

        def mark(mask: npt.NDArray[np.bool_] | np.bool_, name: str) -> None:
            reason[np.asarray(mask) & (reason < 0)] = REASONS.index(name)

        missing = [c for c in (*self._bars, *self._metrics) if c not in frame.columns]
        missing += [c for c in self._texts if c not in frame.texts]
        if missing:
            raise ValueError(f"{self.source}: the frame lacks declared columns {missing}")
        t = np.asarray(frame.times, dtype="datetime64[ns]").view(np.int64)
        mark(t == _NAT, "bad_timestamp")
        for name in self._texts:
            mark(np.array([not (x is None or isinstance(x, str)) for x in frame.texts[name]], bool), "bad_value")
        if self._bars:
            self._check_bars(frame, mark)
        if self._metrics:
            metrics = np.stack([np.asarray(frame.columns[name], dtype=np.float64) for name in self._metrics])
            mark(np.isinf(metrics).any(axis=0), "inf")
        self._check_times(np.asarray(frame.keys), t, reason, mark)

        ok = reason < 0
        if not ok.all():
            counts = np.bincount(reason[~ok], minlength=len(REASONS))
            self._record(Counter({REASONS[i]: int(k) for i, k in enumerate(counts) if k}))
        accepted = frame if ok.all() else frame.take(ok)
        if len(accepted):
            self._remember(np.asarray(accepted.keys), t[ok])
        return accepted

    def flush(self) -> None:
        """Log the rejections not logged yet (call at the end of a stream)."""
        if self._pending:
            self._log(self._pending)
            self._pending = Counter()

    # -- internals -------------------------------------------------------------

    def _check_bars(self, frame: Frame, mark: Callable[[npt.NDArray[np.bool_] | np.bool_, str], None]) -> None:
        """The value rules of bar columns (all five in the usual case)."""
        cols = {name: np.asarray(frame.columns[name], dtype=np.float64) for name in self._bars}
        values = np.stack(list(cols.values()))
        prices = [cols[name] for name in ("open", "high", "low", "close") if name in cols]
        with np.errstate(invalid="ignore"):
            mark(np.isnan(values).any(axis=0), "nan")
            mark(np.isinf(values).any(axis=0), "inf")
            if "volume" in cols:
                mark(cols["volume"] < 0, "negative_volume")
            if prices:
                mark((np.stack(prices) <= 0).any(axis=0), "negative_price")
            if len(prices) == 4:
                o, h, lo, c = prices
                mark(h < lo, "high_lt_low")
                mark((h < np.maximum(o, c)) | (lo > np.minimum(o, c)), "inconsistent_ohlc")

    def _check_times(
        self,
        keys: npt.NDArray[np.str_],
        t: npt.NDArray[np.int64],
        reason: npt.NDArray[np.int8],
        mark: Callable[[npt.NDArray[np.bool_] | np.bool_, str], None],
    ) -> None:
        """Mark rows at or before the latest earlier time of their key.

        An accepted row is exactly one later than every earlier candidate of its
        key, so "latest accepted so far" equals the running maximum over the
        earlier candidates (and the remembered state): computed per key at once
        by sorting stably by key and taking one cumulative maximum over values
        encoded as ``group * ranks + rank``.
        """
        cand = np.flatnonzero(reason < 0)
        if len(cand) == 0:
            return
        ck, ct = keys[cand], t[cand]
        prev = self._lookup(ck)
        if len(cand) > 1:
            uniq_keys, group = np.unique(ck, return_inverse=True)
            if len(uniq_keys) < len(cand):  # some key appears more than once
                order = np.argsort(group, kind="stable")
                g = group[order]
                uniq_t, rank = np.unique(ct[order], return_inverse=True)
                r = len(uniq_t)
                running = np.maximum.accumulate(g.astype(np.int64) * r + rank)
                before = np.full(len(cand), _NAT, dtype=np.int64)
                same = g[1:] == g[:-1]
                before[1:][same] = uniq_t[running[:-1][same] % r]
                earlier = np.empty_like(before)
                earlier[order] = before
                prev = np.maximum(prev, earlier)
        mark_cand = np.zeros(len(t), dtype=bool)
        mark_cand[cand[ct < prev]] = True
        mark(mark_cand, "out_of_order")
        mark_cand[:] = False
        mark_cand[cand[ct == prev]] = True
        mark(mark_cand, "duplicate")

    def _lookup(self, keys: npt.NDArray[np.str_]) -> npt.NDArray[np.int64]:
        if len(self._keys) == 0:
            return np.full(len(keys), _NAT, dtype=np.int64)
        i = np.searchsorted(self._keys, keys)
        i_clip = np.minimum(i, len(self._keys) - 1)
        found = self._keys[i_clip] == keys
        return np.where(found, self._last[i_clip], _NAT)

    def _remember(self, keys: npt.NDArray[np.str_], t: npt.NDArray[np.int64]) -> None:
        if len(self._keys):
            i = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            if (self._keys[i] == keys).all():  # the usual tick: every key already known
                np.maximum.at(self._last, i, t)
                return
        all_keys = np.concatenate([self._keys, keys.astype(str)])
        all_t = np.concatenate([self._last, t])
        uniq, inverse = np.unique(all_keys, return_inverse=True)
        last = np.full(len(uniq), _NAT, dtype=np.int64)
        np.maximum.at(last, inverse, all_t)
        self._keys, self._last = uniq, last

    def _record(self, counts: Counter[str]) -> None:
        self.rejected.update(counts)
        self._pending.update(counts)
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self.log_every:
            self._log(self._pending)
            self._pending = Counter()
            self._logged_at = now

    def _log(self, counts: Counter[str]) -> None:
        detail = ", ".join(f"{r}={counts[r]}" for r in REASONS if counts[r])
        logger.warning("%s: rejected %d rows (%s)", self.source, counts.total(), detail)
