"""price_drop: the price fell by x% or by an amount against the item's last seen price."""

from __future__ import annotations

import math
import pickle

import pytest

from signalmint.detectors.price_drop import PriceDrop, PriceDropOptions
from signalmint.errors import DetectorError
from signalmint.pipeline import signals_from_scores
from signalmint.testing import check_detector
from tests.detectors.frames import frame


def run(det: PriceDrop, prices: list[float]) -> list[bool]:
    return [bool(det.update(frame(["sku"], i, price=[p])).flags[0]) for i, p in enumerate(prices)]


def test_percent_rule_against_the_last_seen_price() -> None:
    # 100 -> 90: -10% fires; 90 -> 85: -5.6% no; 85 -> 95 up; 95 -> 85.5: exactly -10% fires
    assert run(PriceDrop(pct=10), [100, 90, 85, 95, 85.5]) == [False, True, False, False, True]


def test_a_slow_slide_does_not_add_up() -> None:
    assert run(PriceDrop(pct=10), [100, 95, 90.25, 85.7375, 81.45]) == [False] * 5


def test_amount_rule_with_float_rounding() -> None:
    # 19.99 -> 17.99 is a drop of 2.00 (2.0000000000000018 or 1.99999... in floats)
    assert run(PriceDrop(amount=2), [19.99, 17.99, 16.0, 15.0]) == [False, True, False, False]
    assert run(PriceDrop(amount=0.3), [0.7, 0.4]) == [False, True]  # 0.7 - 0.4 = 0.29999999999999993


def test_either_rule_fires_when_both_are_set() -> None:
    # 1000 -> 960: 4% but 40 units; 10 -> 8: 2 units but 20%
    det = PriceDrop(pct=10, amount=30)
    scores = det.update(frame(["big", "small"], 0, price=[1000, 10]))
    scores = det.update(frame(["big", "small"], 1, price=[960, 8]))
    assert scores.flags.tolist() == [True, True]
    assert scores.details["drop"].tolist() == [40, 2]
    assert scores.details["drop_pct"].tolist() == [4, 20]


def test_missing_prices_are_skipped_and_zero_prices_never_fire() -> None:
    assert run(PriceDrop(pct=10), [100, math.nan, 80]) == [False, False, True]
    assert run(PriceDrop(amount=1), [0, -5, 3, 1]) == [False, False, False, True]


def test_the_payload_carries_the_included_text() -> None:
    det = PriceDrop(pct=10, include=["title", "url"])
    texts = {"title": ["Kettle"], "url": ["https://shop.test/kettle"]}
    det.update(frame(["sku"], 0, texts=texts, price=[40]))
    scores = det.update(frame(["sku"], 1, texts=texts, price=[30]))
    [signal] = signals_from_scores("shop", "price_drop", scores)
    assert signal.payload == {
        "price": 30.0,
        "previous": 40.0,
        "drop": 10.0,
        "drop_pct": 25.0,
        "title": "Kettle",
        "url": "https://shop.test/kettle",
    }
    assert signal.score == 25.0


def test_needs_options_and_pickling() -> None:
    options = PriceDropOptions.model_validate({"pct": 5, "include": ["title"]})
    assert PriceDrop.needs(options) == {"price": "metric", "title": "text"}
    with pytest.raises(DetectorError, match="pct"):
        PriceDrop()
    det = PriceDrop(pct=5)
    det.update(frame(["sku"], 0, price=[10]))
    assert pickle.loads(pickle.dumps(det)).update(frame(["sku"], 1, price=[9])).flags.tolist() == [True]


def test_repeated_items_in_one_frame_go_in_row_order() -> None:
    scores = PriceDrop(pct=10).update(frame(["a", "a", "b", "a"], [0, 1, 0, 2], price=[10, 8, 5, 9]))
    assert scores.flags.tolist() == [False, True, False, False]
    assert scores.details["previous"][[1, 3]].tolist() == [10, 8]


def test_conformance() -> None:
    check_detector(lambda: PriceDrop(column="price", pct=20, include=["title"]))
