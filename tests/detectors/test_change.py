"""change: a text changed by at least a difference ratio; the diff is in the payload."""

from __future__ import annotations

import pickle

import pytest

from signalmint.detectors.change import Change, ChangeOptions, difference, unified_diff
from signalmint.errors import DetectorError
from signalmint.pipeline import signals_from_scores
from signalmint.testing import check_detector
from tests.detectors.frames import frame


def run(det: Change, texts: list[str | None], key: str = "page") -> list[bool]:
    return [bool(det.update(frame([key], i, texts={"text": [t]})).flags[0]) for i, t in enumerate(texts)]


def test_difference_is_one_minus_difflibs_ratio_hand_computed() -> None:
    assert difference("abcd", "abcd") == 0.0
    # "abcd" vs "abce": 3 matching of 8 characters in all -> ratio 6/8, difference 0.25
    assert difference("abcd", "abce") == 0.25
    assert difference("abc", "xyz") == 1.0


def test_fires_beyond_the_minimum_and_compares_with_the_last_text() -> None:
    det = Change(min_ratio=0.2)
    # first text records; abcd->abce 0.25 fires; abce->abcf 0.25 fires; ->abcf 0 no; None skipped
    assert run(det, ["abcd", "abce", "abcf", "abcf", None, "wxyz"]) == [False, True, True, False, False, True]
    assert run(Change(min_ratio=0.3), ["abcd", "abce", "abcf"], key="other") == [False, False, False]


def test_long_texts_are_compared_by_lines() -> None:
    before = "\n".join(f"line {i} " + "x" * 40 for i in range(100))
    after = before.replace("line 5 ", "LINE 5 ").replace("line 6 ", "LINE 6 ")
    # 98 of 100 lines match on each side: ratio 196/200, difference 0.02
    assert difference(before, after) == pytest.approx(0.02)


def test_the_payload_has_the_diff_capped_in_size() -> None:
    det = Change(min_ratio=0.01, max_diff=150, include=["url"])
    old = "\n".join(f"row {i}" for i in range(60))
    new = "\n".join(f"row {i}!" for i in range(60))
    det.update(frame(["p"], 0, texts={"text": [old], "url": ["https://x.test/p"]}))
    scores = det.update(frame(["p"], 1, texts={"text": [new], "url": ["https://x.test/p"]}))
    [signal] = signals_from_scores("pages", "change", scores)
    diff = signal.payload["diff"]
    full = unified_diff(old, new, context=1, limit=10**6)
    assert (
        diff.startswith("--- before\n+++ after\n@@")
        and diff == full[:150] + f"\n... ({len(full) - 150} more characters)"
    )
    assert signal.payload["url"] == "https://x.test/p" and signal.payload["difference"] == signal.score


def test_unchanged_rows_carry_no_diff() -> None:
    det = Change()
    det.update(frame(["p"], 0, texts={"text": ["same"]}))
    assert det.update(frame(["p"], 1, texts={"text": ["same"]})).extras["diff"].tolist() == [None]


def test_needs_options_and_pickling() -> None:
    assert Change.needs(ChangeOptions(column="body", include=["url"])) == {"body": "text", "url": "text"}
    with pytest.raises(DetectorError, match="min_ratio"):
        Change(min_ratio=0)
    det = Change()
    det.update(frame(["p"], 0, texts={"text": ["hello world"]}))
    assert pickle.loads(pickle.dumps(det)).update(frame(["p"], 1, texts={"text": ["goodbye"]})).flags.tolist() == [True]


def test_conformance() -> None:
    check_detector(lambda: Change(column="text", min_ratio=0.01))
