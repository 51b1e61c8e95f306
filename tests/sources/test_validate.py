"""RowValidator: every rejection reason, counting, logging, and a model-based property."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalmint.records import BAR_COLUMNS, Frame, Schema
from signalmint.sources.validate import REASONS, RowValidator

GOOD = (10.0, 11.0, 9.0, 10.5, 100.0)  # open, high, low, close, volume


def frame(rows: Sequence[tuple[str, int | None, tuple[float, ...]]]) -> Frame:
    """Rows of (key, minute or None for NaT, (o, h, l, c, v))."""
    times = np.array(
        [np.datetime64("NaT") if m is None else np.datetime64(m, "m") for _, m, _ in rows],
        dtype="datetime64[ns]",
    )
    values = np.array([v for _, _, v in rows], dtype=np.float64).reshape(len(rows), 5)
    return Frame(
        keys=np.array([k for k, _, _ in rows], dtype=str),
        times=times,
        columns={c: values[:, i].copy() for i, c in enumerate(BAR_COLUMNS)},
    )


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ((math.nan, 11.0, 9.0, 10.5, 100.0), "nan"),
        ((10.0, 11.0, 9.0, 10.5, math.nan), "nan"),
        ((10.0, math.inf, 9.0, 10.5, 100.0), "inf"),
        ((10.0, 11.0, 9.0, 10.5, -math.inf), "inf"),
        ((10.0, 11.0, 9.0, 10.5, -1.0), "negative_volume"),
        ((10.0, 11.0, -9.0, 10.5, 100.0), "negative_price"),
        ((0.0, 11.0, 9.0, 10.5, 100.0), "negative_price"),
        ((10.0, 8.0, 9.0, 8.5, 100.0), "high_lt_low"),
        ((10.0, 10.2, 9.0, 10.5, 100.0), "inconsistent_ohlc"),
        ((10.0, 11.0, 10.2, 10.5, 100.0), "inconsistent_ohlc"),
    ],
)
def test_value_reasons(values: tuple[float, ...], reason: str) -> None:
    v = RowValidator()
    out = v.check(frame([("A", 0, GOOD), ("B", 0, values), ("C", 0, GOOD)]))
    assert out.keys.tolist() == ["A", "C"]
    assert dict(v.rejected) == {reason: 1}


def test_zero_volume_and_flat_bar_are_valid() -> None:
    v = RowValidator()
    out = v.check(frame([("A", 0, (5.0, 5.0, 5.0, 5.0, 0.0))]))
    assert len(out) == 1 and not v.rejected


def test_nat_is_bad_timestamp() -> None:
    v = RowValidator()
    out = v.check(frame([("A", None, GOOD), ("A", 1, GOOD)]))
    assert out.keys.tolist() == ["A"]
    assert dict(v.rejected) == {"bad_timestamp": 1}


def test_out_of_order_and_duplicate_across_batches() -> None:
    v = RowValidator()
    v.check(frame([("A", 5, GOOD), ("B", 5, GOOD)]))
    out = v.check(frame([("A", 4, GOOD), ("B", 5, GOOD), ("C", 1, GOOD)]))
    assert out.keys.tolist() == ["C"]
    assert dict(v.rejected) == {"out_of_order": 1, "duplicate": 1}
    assert v.last_time("A") == np.datetime64(5, "m")
    assert v.last_time("C") == np.datetime64(1, "m")
    assert v.last_time("Z") is None


def test_within_batch_per_key_order_and_duplicate_keeps_first() -> None:
    v = RowValidator()
    first = (10.0, 11.0, 9.0, 10.5, 1.0)
    second = (10.0, 11.0, 9.0, 10.5, 2.0)
    rows = [
        ("A", 3, first),
        ("B", 1, GOOD),
        ("A", 3, second),  # duplicate of the first A row
        ("A", 2, GOOD),  # out of order (after 3)
        ("B", 2, GOOD),
        ("A", 4, GOOD),
    ]
    out = v.check(frame(rows))
    minutes = out.times.astype("datetime64[m]").astype(int).tolist()
    assert list(zip(out.keys.tolist(), minutes, strict=True)) == [
        ("A", 3),
        ("B", 1),
        ("B", 2),
        ("A", 4),
    ]
    assert out.columns["volume"][0] == 1.0
    assert dict(v.rejected) == {"duplicate": 1, "out_of_order": 1}


def test_rejected_value_row_does_not_advance_the_key() -> None:
    v = RowValidator()
    out = v.check(frame([("A", 5, (math.nan, 1, 1, 1, 1)), ("A", 5, GOOD)]))
    assert len(out) == 1 and dict(v.rejected) == {"nan": 1}
    out = v.check(frame([("A", 6, (1.0, 0.5, 2.0, 1.0, 1.0)), ("A", 6, GOOD)]))
    assert len(out) == 1 and v.rejected["high_lt_low"] == 1


def test_first_reason_wins_and_each_row_counted_once() -> None:
    v = RowValidator()
    v.check(frame([("A", 5, GOOD)]))
    out = v.check(frame([("A", 4, (math.nan, -1.0, math.inf, 1.0, -5.0))]))
    assert len(out) == 0
    assert dict(v.rejected) == {"nan": 1}


def test_garbage_never_raises() -> None:
    v = RowValidator()
    rows = [("X", None, (math.nan, math.inf, -math.inf, -1.0, -1.0))] * 50
    assert len(v.check(frame(rows))) == 0
    assert v.rejected.total() == 50
    assert len(v.check(Frame.empty())) == 0


def test_shared_counter_and_parse_level_reasons() -> None:
    counter: Counter[str] = Counter()
    v = RowValidator(counter)
    v.reject("naive_timestamp", 3)
    v.reject("bad_value")
    v.reject("bad_timestamp", 0)
    assert dict(counter) == {"naive_timestamp": 3, "bad_value": 1}
    with pytest.raises(ValueError, match="unknown rejection reason"):
        v.reject("weird")


def test_logging_is_aggregated_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    v = RowValidator(source="demo", log_every=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="signalmint.sources")
    bad = (math.nan, 1.0, 1.0, 1.0, 1.0)
    v.check(frame([("A", 1, bad), ("B", 1, bad), ("C", 1, (1.0, 1.0, 1.0, 1.0, -1.0))]))
    assert len(caplog.records) == 1
    assert caplog.records[0].name == "signalmint.sources"
    assert caplog.records[0].getMessage() == "demo: rejected 3 rows (nan=2, negative_volume=1)"
    now[0] = 5.0
    v.check(frame([("A", 2, bad)]))
    v.check(frame([("A", 3, bad)]))
    assert len(caplog.records) == 1  # held back, still counted
    assert v.rejected["nan"] == 4
    now[0] = 11.0
    v.check(frame([("A", 4, bad)]))
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage() == "demo: rejected 3 rows (nan=3)"
    v.check(frame([("A", 5, bad)]))
    v.flush()
    assert caplog.records[-1].getMessage() == "demo: rejected 1 rows (nan=1)"
    v.flush()
    assert len(caplog.records) == 3


def test_no_log_without_rejections(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="signalmint.sources")
    v = RowValidator()
    v.check(frame([("A", 1, GOOD)]))
    v.flush()
    assert not caplog.records


# -- property: the vectorized validator agrees with a row-by-row model -----------

finite = st.floats(min_value=0.5, max_value=100.0)
spread = st.floats(min_value=0.0, max_value=5.0)


@st.composite
def bar(draw: st.DrawFn) -> tuple[float, ...]:
    """A consistent bar most of the time; else one field replaced by something bad."""
    o, c = draw(finite), draw(finite)
    values = [o, max(o, c) + draw(spread), min(o, c) - draw(spread), c, draw(finite)]
    if draw(st.integers(0, 3)) == 0:
        bad = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 0.25, 1000.0])
        values[draw(st.integers(0, 4))] = draw(bad)
    return tuple(values)


row = st.tuples(
    st.sampled_from(["A", "B", "C"]),
    st.one_of(st.integers(0, 6), st.integers(0, 6), st.none()),
    bar(),
)


def model(
    batches: list[list[tuple[str, int | None, tuple[float, ...]]]],
) -> tuple[list[list[int]], Counter[str]]:
    """Row by row: the first failing rule in REASONS order, then per-key time rules."""
    last: dict[str, int] = {}
    counts: Counter[str] = Counter()
    accepted: list[list[int]] = []
    for batch in batches:
        kept = []
        for i, (key, minute, (o, h, lo, c, v)) in enumerate(batch):
            vals = (o, h, lo, c, v)
            checks = [
                ("bad_timestamp", minute is None),
                ("nan", any(math.isnan(x) for x in vals)),
                ("inf", any(math.isinf(x) for x in vals)),
                ("negative_volume", v < 0),
                ("negative_price", min(o, h, lo, c) <= 0),
                ("high_lt_low", h < lo),
                ("inconsistent_ohlc", h < max(o, c) or lo > min(o, c)),
            ]
            failed = next((r for r, bad in checks if bad), None)
            if failed is None and minute is not None and key in last:
                if minute < last[key]:
                    failed = "out_of_order"
                elif minute == last[key]:
                    failed = "duplicate"
            if failed is None:
                assert minute is not None
                last[key] = minute
                kept.append(i)
            else:
                counts[failed] += 1
        accepted.append(kept)
    return accepted, counts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(row, max_size=12), max_size=5))
def test_property_matches_row_model(
    batches: list[list[tuple[str, int | None, tuple[float, ...]]]],
) -> None:
    v = RowValidator()
    expected_rows, expected_counts = model(batches)
    seen: dict[str, np.datetime64] = {}
    total_in = total_out = 0
    for batch, expected in zip(batches, expected_rows, strict=True):
        f = frame(batch) if batch else Frame.empty()
        out = v.check(f)
        total_in += len(f)
        total_out += len(out)
        assert len(out) == len(expected)
        assert out.keys.tolist() == [batch[i][0] for i in expected]
        for name in BAR_COLUMNS:
            assert np.isfinite(out.columns[name]).all()
        for key, t in zip(out.keys.tolist(), out.times, strict=True):
            assert key not in seen or t > seen[key]  # strictly increasing per key
            seen[key] = t
    assert dict(v.rejected) == dict(expected_counts)
    assert total_out + v.rejected.total() == total_in
    assert set(v.rejected) <= set(REASONS)


# -- column kinds: metric and text columns are not bars ------------------------------------

SHOP: Schema = {"price": "metric", "in_stock": "metric", "title": "text"}


def shop_frame(prices: list[float], titles: list[object]) -> Frame:
    n = len(prices)
    return Frame(
        keys=np.array([f"item{i}" for i in range(n)]),
        times=np.full(n, np.datetime64("2024-01-02T09:30", "ns")),
        columns={"price": np.array(prices), "in_stock": np.ones(n)},
        texts={"title": np.array(titles, dtype=object)},
    )


def test_metric_and_text_columns_skip_the_bar_rules() -> None:
    v = RowValidator(schema=SHOP)
    # a zero price, a missing (NaN) price and a missing title are fine for a shop
    ok = v.check(shop_frame([0.0, math.nan, 12.5], ["a", None, "c"]))
    assert len(ok) == 3 and not v.rejected
    assert ok.texts["title"].tolist() == ["a", None, "c"]


def test_metric_infinity_and_non_text_values_are_rejected() -> None:
    v = RowValidator(schema=SHOP)
    ok = v.check(shop_frame([math.inf, 1.0, 2.0], ["a", 3, "c"]))
    assert ok.keys.tolist() == ["item2"] and ok.texts["title"].tolist() == ["c"]
    assert v.rejected == Counter({"inf": 1, "bad_value": 1})


def test_a_declared_column_missing_from_the_frame_is_the_sources_bug() -> None:
    with pytest.raises(ValueError, match="lacks declared columns"):
        RowValidator(schema={**SHOP, "url": "text"}).check(shop_frame([1.0], ["a"]))


def test_a_volume_only_bar_schema_keeps_the_volume_rules() -> None:
    v = RowValidator(schema={"volume": "bar"})
    f = Frame(
        keys=np.array(["A", "B", "C"]),
        times=np.full(3, np.datetime64("2024-01-02T09:30", "ns")),
        columns={"volume": np.array([5.0, -1.0, math.nan])},
    )
    assert v.check(f).keys.tolist() == ["A"]
    assert v.rejected == Counter({"negative_volume": 1, "nan": 1})
