"""new_item: keys not seen before, matching keyword or regex filters, with bounded memory."""

from __future__ import annotations

import pickle

import pytest

from signalmint.config import parse_settings
from signalmint.detectors.new_item import NewItem, NewItemOptions
from signalmint.errors import ConfigError, DetectorError
from signalmint.pipeline import signals_from_scores
from signalmint.registry import Registry
from signalmint.testing import check_detector
from tests.detectors.frames import frame


def poll(det: NewItem, minute: int, items: dict[str, str], **texts: list[str]) -> list[bool]:
    f = frame(list(items), minute, texts={"title": list(items.values()), **texts})
    return [bool(flag) for flag in det.update(f).flags]


def test_the_backlog_is_remembered_then_only_new_items_fire() -> None:
    det = NewItem()
    assert poll(det, 0, {"a": "one", "b": "two"}) == [False, False]
    assert poll(det, 1, {"a": "one", "c": "three", "b": "two"}) == [False, True, False]
    assert poll(det, 2, {"c": "three"}) == [False]


def test_announce_existing_fires_for_the_first_frame_too() -> None:
    assert poll(NewItem(announce_existing=True), 0, {"a": "one", "b": "two"}) == [True, True]


def test_keywords_are_case_insensitive_substrings_and_regexes_search() -> None:
    det = NewItem(match=["GPU", r"/\bsale\b/"], announce_existing=True)
    items = {"1": "New gpu drivers", "2": "Wholesale prices", "3": "Big SALE today", "4": "Weather"}
    assert poll(det, 0, items) == [True, False, True, False]


def test_filters_search_every_field_and_unmatched_items_are_still_remembered() -> None:
    det = NewItem(match=["kettle"], fields=["title", "text"], announce_existing=True)
    f = frame(["x", "y"], 0, texts={"title": ["Offer", "Offer"], "text": [None, "A kettle for 9.99"]})
    assert det.update(f).flags.tolist() == [False, True]
    # x is edited to match, but it is not new any more
    f = frame(["x"], 1, texts={"title": ["Kettle offer"], "text": [None]})
    assert det.update(f).flags.tolist() == [False]


def test_memory_is_bounded_least_recently_seen_out_first() -> None:
    det = NewItem(memory=2, announce_existing=True)
    assert poll(det, 0, {"a": "", "b": ""}) == [True, True]
    assert poll(det, 1, {"a": "", "c": ""}) == [False, True]  # a refreshed; b (least recent) out
    assert len(det._seen) == 2
    assert poll(det, 2, {"a": "", "b": ""}) == [False, True]  # b was forgotten: new again


def test_title_url_and_matches_reach_the_payload() -> None:
    det = NewItem(match=["rust"], announce_existing=True, max_text=12)
    f = frame(["e1"], 0, texts={"title": ["Rust in the kernel, part two"], "url": ["https://news.test/e1"]})
    [signal] = signals_from_scores("feed", "new_item", det.update(f))
    assert signal.payload == {
        "new": 1.0,
        "matches": 1.0,
        "matched": ["rust"],
        "title": "Rust in the ",
        "url": "https://news",
    }


def test_bad_regex_is_refused_by_check_with_the_key() -> None:
    with pytest.raises(DetectorError, match="not a valid regular expression"):
        NewItem(match=["/(unclosed/"])
    text = "automations:\n  - name: feed\n    source: {kind: synthetic}\n    detector:\n      kind: new_item\n"
    text += "      match: ['/(unclosed/']\n"
    with pytest.raises(ConfigError) as info:
        parse_settings(text, file="cfg.yaml", registry=Registry.from_entry_points(), env={})
    assert (info.value.line, info.value.key) == (6, "automations[0].detector.match")


def test_needs_and_pickling() -> None:
    assert NewItem.needs(NewItemOptions(match=["x"], fields=["title", "summary"])) == {
        "title": "text",
        "summary": "text",
    }
    assert NewItem.needs(NewItemOptions()) == {}
    det = NewItem(match=["/a+/"])
    poll(det, 0, {"k1": "aaa"})
    clone = pickle.loads(pickle.dumps(det))
    assert poll(clone, 1, {"k1": "aaa", "k2": "baa", "k3": "xyz"}) == [False, True, False]


def test_conformance() -> None:
    check_detector(lambda: NewItem(announce_existing=True))
    check_detector(lambda: NewItem(match=["K01", "/K00[0-4]/"], announce_existing=True))
