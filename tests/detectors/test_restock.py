"""restock: availability goes from 0 to in stock."""

from __future__ import annotations

import math
import pickle

from signalmint.detectors.restock import Restock, RestockOptions
from signalmint.pipeline import signals_from_scores
from signalmint.testing import check_detector
from tests.detectors.frames import frame


def run(det: Restock, values: list[float]) -> list[bool]:
    return [bool(det.update(frame(["sku"], i, in_stock=[v])).flags[0]) for i, v in enumerate(values)]


def test_fires_on_each_return_to_stock_only() -> None:
    assert run(Restock(), [0, 0, 1, 1, 0, 1]) == [False, False, True, False, False, True]


def test_first_sighting_in_stock_is_not_a_restock_and_counts_work() -> None:
    assert run(Restock(), [5, 0, 12, 3]) == [False, False, True, False]


def test_missing_values_keep_the_last_known_state() -> None:
    assert run(Restock(), [0, math.nan, 1]) == [False, False, True]
    assert run(Restock(), [1, math.nan, 1]) == [False, False, False]


def test_the_payload_has_price_and_title() -> None:
    det = Restock(price_column="price", include=["title"])
    texts = {"title": ["Console", "Cable"]}
    det.update(frame(["a", "b"], 0, texts=texts, in_stock=[0, 0], price=[499, 9]))
    scores = det.update(frame(["a", "b"], 1, texts=texts, in_stock=[1, 0], price=[479, 9]))
    [signal] = signals_from_scores("shop", "restock", scores)
    assert (signal.key, signal.payload) == ("a", {"in_stock": 1.0, "previous": 0.0, "price": 479.0, "title": "Console"})


def test_needs_and_pickling() -> None:
    options = RestockOptions.model_validate({"price_column": "price", "include": ["url"]})
    assert Restock.needs(options) == {"in_stock": "metric", "url": "text", "price": "metric"}
    det = Restock()
    det.update(frame(["sku"], 0, in_stock=[0]))
    assert pickle.loads(pickle.dumps(det)).update(frame(["sku"], 1, in_stock=[1])).flags.tolist() == [True]


def test_conformance() -> None:
    check_detector(lambda: Restock(column="in_stock", include=["url"]))
