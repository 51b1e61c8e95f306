"""Replay a CSV or Parquet file of bars, one frame per distinct time.

The file is read with polars when the stream starts, mapped to the bar columns
through ``columns``, checked, and replayed in time order with ``pace`` seconds
between ticks. What happens to each row, in this order (each bad row is counted
once, under the first reason that applies):

1. ``symbols`` keeps only the listed keys (other rows are not counted);
2. the time is parsed: text as ISO 8601 (``2024-01-02T09:30:00Z``, ``+00:00``,
   ``-05:00``, a space instead of ``T``, a date alone), or a polars
   Datetime/Date column. A time with no timezone is read in ``timezone`` when
   one is set, else rejected as ``naive_timestamp``; an unparseable one is
   ``bad_timestamp``. Local times that do not exist (DST gap) are
   ``bad_timestamp``; ambiguous ones take the earlier instant;
3. rows at or before ``since`` are skipped (not counted);
4. a missing key or text in a numeric column is ``bad_value``; an empty
   numeric cell is ``nan``;
5. the :class:`~signalmint.sources.validate.RowValidator` sees the remaining
   rows **in file order**, so a row earlier than an earlier row of the same key
   is ``out_of_order`` and a repeat of a (key, time) is ``duplicate`` (the first
   one in the file wins). The accepted rows are then sorted by time (stably)
   and grouped into ticks.

All of this happens before the first tick, so ``rejected`` holds the file's
whole count from then on. Rows with a bad time are counted on every
``stream()`` call, since they cannot be placed before or after ``since``.

A missing file, an unknown format or a missing mapped column raises
:class:`~signalmint.errors.SourceError` when the source is built.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import SourceError
from ..records import BAR_COLUMNS, Frame, to_datetime64
from .validate import RowValidator

__all__ = ["ColumnMap", "FileReplay", "number_column", "parse_times", "replay", "split_ticks"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OK, _BAD, _NAIVE = 0, 1, 2


class ColumnMap(BaseModel):
    """Which column of the file holds each field of a bar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field("symbol", description="Series id (symbol).")
    time: str = Field("time", description="Bar time: ISO 8601 text or a datetime column.")
    open: str = "open"
    high: str = "high"
    low: str = "low"
    close: str = "close"
    volume: str = "volume"


class FileOptions(BaseModel):
    """Settings of the ``file`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="CSV or Parquet file to replay.")
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="File format; auto reads it from the extension."
    )
    columns: ColumnMap = Field(default_factory=ColumnMap, description="Field -> file column.")
    timezone: str | None = Field(None, description="IANA zone for times without an offset; unset rejects them.")
    pace: float = Field(0.0, ge=0, description="Seconds between ticks (0: as fast as possible).")
    symbols: list[str] | None = Field(None, description="Replay only these keys.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {value!r} (use e.g. 'America/New_York')") from None
        return value


def split_ticks(frame: Frame) -> list[Frame]:
    """``frame`` sorted by time (stably) and cut into one frame per distinct time."""
    t = frame.times.view(np.int64)
    order = np.argsort(t, kind="stable")
    keys, times = frame.keys[order], frame.times[order]
    columns = {name: col[order] for name, col in frame.columns.items()}
    bounds = [0, *(np.flatnonzero(np.diff(times.view(np.int64))) + 1).tolist(), len(frame)]
    return [
        Frame(keys=keys[a:b], times=times[a:b], columns={n: c[a:b] for n, c in columns.items()})
        for a, b in pairwise(bounds)
        if b > a
    ]


async def replay(
    ticks: Iterable[Frame],
    pace: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Frame]:
    """Yield ``ticks`` with ``pace`` seconds between them (yielding to the loop at least)."""
    for i, tick in enumerate(ticks):
        if i:
            await (sleep(pace) if pace > 0 else asyncio.sleep(0))
        yield tick


def parse_times(text: pl.Series, zone: ZoneInfo | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """ISO 8601 strings as UTC nanoseconds, with a status per row (ok, bad, naive).

    Each distinct string is parsed once with :meth:`datetime.fromisoformat`.
    """
    raw = text.fill_null("").to_numpy().astype(str)
    uniq, inverse = np.unique(raw, return_inverse=True)
    ns = np.zeros(len(uniq), dtype=np.int64)
    status = np.full(len(uniq), _BAD, dtype=np.int8)
    for i, s in enumerate(uniq.tolist()):
        try:
            dt = datetime.fromisoformat(s.strip())
        except ValueError:
            continue
        aware = dt if dt.tzinfo is not None else None if zone is None else _localize(dt, zone)
        if aware is None:
            status[i] = _NAIVE if dt.tzinfo is None and zone is None else _BAD
            continue
        ns[i] = (aware - _EPOCH) // timedelta(microseconds=1) * 1000
        status[i] = _OK
    return ns[inverse], status[inverse]


def _localize(naive: datetime, zone: ZoneInfo) -> datetime | None:
    """``naive`` read in ``zone`` (earlier instant if ambiguous; None in a DST gap)."""
    local = naive.replace(tzinfo=zone)
    back = local.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return local if back == naive else None


def _datetime_column(col: pl.Series, zone: ZoneInfo | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    if col.dtype == pl.Date:
        col = col.cast(pl.Datetime("us"))
    zone_of_column = getattr(col.dtype, "time_zone", None)
    missing = col.is_null().to_numpy()
    if zone_of_column is not None:
        utc = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        status = np.where(missing, _BAD, _OK).astype(np.int8)
    elif zone is not None:
        utc = col.dt.replace_time_zone(zone.key, ambiguous="earliest", non_existent="null")
        utc = utc.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        status = np.where(utc.is_null().to_numpy(), _BAD, _OK).astype(np.int8)
    else:
        utc = col
        status = np.where(missing, _BAD, _NAIVE).astype(np.int8)
    ns = utc.dt.cast_time_unit("ns").cast(pl.Int64).fill_null(0).to_numpy()
    return ns.astype(np.int64), status


def number_column(col: pl.Series, what: str, source: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The column as float64 (missing -> NaN) and where its text was not a number."""
    if col.dtype == pl.String:
        stripped = col.str.strip_chars()
        values = stripped.cast(pl.Float64, strict=False)
        bad = (values.is_null() & stripped.is_not_null() & (stripped != "")).to_numpy()
    else:
        try:
            values = col.cast(pl.Float64)
        except pl.exceptions.PolarsError as err:
            raise SourceError(f"{source}: column {col.name!r} ({what}) has type {col.dtype}, not numbers") from err
        bad = np.zeros(len(col), dtype=bool)
    return values.fill_null(float("nan")).to_numpy().astype(np.float64), bad


class FileReplay:
    """Replays the bars of a CSV or Parquet file, one frame per distinct time."""

    kind: ClassVar[str] = "file"
    Options: ClassVar[type[FileOptions]] = FileOptions
    #: A replay of history: never stale, never late; its cadence is unknown (set the
    #: automation's ``cadence`` to count gaps).
    live: ClassVar[bool] = False
    cadence: ClassVar[timedelta | None] = None

    def __init__(
        self,
        path: str,
        format: Literal["auto", "csv", "parquet"] = "auto",
        columns: Mapping[str, str] | ColumnMap | None = None,
        timezone: str | None = None,
        pace: float = 0.0,
        symbols: list[str] | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.path = path
        self.columns = columns if isinstance(columns, ColumnMap) else ColumnMap.model_validate(columns or {})
        self.timezone = timezone
        self.pace = pace
        self.symbols = symbols
        self.sleep = sleep
        self.format = format if format != "auto" else self._format_of(path)
        self._rejected: Counter[str] = Counter()
        self._check_schema()

    def __repr__(self) -> str:
        return f"FileReplay(path={self.path!r}, format={self.format!r})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rows rejected so far, by reason."""
        return MappingProxyType(self._rejected)

    @staticmethod
    def _format_of(path: str) -> Literal["csv", "parquet"]:
        name = path.lower()
        if name.endswith((".csv", ".csv.gz", ".txt")):
            return "csv"
        if name.endswith((".parquet", ".pq")):
            return "parquet"
        raise SourceError(f"{path}: cannot tell the format from the name; set format: csv or parquet")

    def _scan(self) -> pl.LazyFrame:
        if not Path(self.path).is_file():
            raise SourceError(f"{self.path}: no such file")
        if self.format == "csv":
            return pl.scan_csv(self.path, infer_schema=False)
        return pl.scan_parquet(self.path)

    def _check_schema(self) -> None:
        try:
            present = self._scan().collect_schema().names()
        except pl.exceptions.PolarsError as err:
            raise SourceError(f"{self.path}: cannot read it as {self.format}: {err}") from err
        for field, name in self.columns.model_dump().items():
            if name not in present:
                raise SourceError(
                    f"{self.path}: column {name!r} (columns.{field}) not found; "
                    f"the file has columns: {', '.join(present) or 'none'}"
                )

    def _read(self) -> pl.DataFrame:
        cols = self.columns
        lazy = self._scan().select(pl.col(getattr(cols, field)).alias(field) for field in ("key", "time", *BAR_COLUMNS))
        lazy = lazy.with_columns(pl.col("key").cast(pl.String).str.strip_chars())
        if self.symbols is not None:
            lazy = lazy.filter(pl.col("key").is_in(self.symbols))
        try:
            return lazy.collect()
        except pl.exceptions.PolarsError as err:
            raise SourceError(f"{self.path}: cannot read it as {self.format}: {err}") from err

    def _load(self, validator: RowValidator, since: datetime | None) -> Frame:
        """Every row that passes, in file order (see the module docstring)."""
        self._check_schema()
        df = self._read()
        zone = ZoneInfo(self.timezone) if self.timezone else None
        time_col = df["time"]
        if time_col.dtype == pl.String:
            ns, status = parse_times(time_col, zone)
        elif time_col.dtype == pl.Date or isinstance(time_col.dtype, pl.Datetime):
            ns, status = _datetime_column(time_col, zone)
        else:
            raise SourceError(
                f"{self.path}: column {self.columns.time!r} (columns.time) has type "
                f"{time_col.dtype}; expected ISO 8601 text or a datetime"
            )
        validator.reject("bad_timestamp", int((status == _BAD).sum()))
        validator.reject("naive_timestamp", int((status == _NAIVE).sum()))
        keep = status == _OK
        if since is not None:
            keep &= ns > int(to_datetime64(since).astype(np.int64))
        bad = df["key"].is_null().to_numpy() | (df["key"] == "").fill_null(True).to_numpy()
        values: dict[str, npt.NDArray[np.float64]] = {}
        for name in BAR_COLUMNS:
            values[name], text = number_column(df[name], f"columns.{name}", self.path)
            bad |= text
        validator.reject("bad_value", int((bad & keep).sum()))
        keep &= ~bad
        frame = Frame(
            keys=df["key"].fill_null("").to_numpy().astype(str)[keep],
            times=ns[keep].view("datetime64[ns]"),
            columns={name: col[keep] for name, col in values.items()},
        )
        return validator.check(frame)

    def read_all(self) -> Frame:
        """Every accepted row of the file at once, sorted by time (stably), as ``stream``
        would replay them; for backtests. Rejected rows are counted in ``rejected``."""
        validator = RowValidator(self._rejected, source=f"{self.kind} {self.path}")
        try:
            frame = self._load(validator, None)
        finally:
            validator.flush()
        order = np.argsort(frame.times.view(np.int64), kind="stable")
        return frame.take(order)

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """The file's accepted rows, one frame per time, ``pace`` seconds apart."""
        validator = RowValidator(self._rejected, source=f"{self.kind} {self.path}")
        try:
            frame = await asyncio.to_thread(self._load, validator, since)
            async for tick in replay(split_ticks(frame), self.pace, self.sleep):
                yield tick
        finally:
            validator.flush()
