"""Change: a text column (a page region, a description, a title) changed by at least ``min_ratio``.

The rule, per key, for a text ``t`` and the key's last seen text ``s``::

    difference = 1 - difflib.SequenceMatcher(None, s, t).ratio()    # 0 same .. 1 all new
    flag       = difference >= min_ratio

Texts of up to ``_CHARS`` characters each are compared character by character; longer ones
line by line (difflib's matcher is quadratic in the worst case, so whole pages are compared
as lists of lines). Equal texts are 0 without running the matcher. The key's first text only
records it; a missing (``None``) text is skipped and the last one stays. The last seen text
is updated on every row, so many small edits do not add up.

The payload has ``difference`` and a unified diff of the lines (``context`` lines around
each change), cut to ``max_diff`` characters with a note of how much was left out. Texts are
not columnar, so the work is a Python loop over the rows whose text differs from the last.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..records import ColumnKind, Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured

__all__ = ["Change", "ChangeOptions", "unified_diff"]

#: Texts longer than this (either one) are compared line by line.
_CHARS = 2000


class ChangeOptions(BaseModel):
    """Settings of :class:`Change`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("text", description="the text column watched")
    min_ratio: float = Field(0.05, gt=0, le=1, description="minimum difference, 1 - difflib's similarity ratio")
    max_diff: int = Field(2000, ge=100, description="the diff in the payload is cut to this many characters")
    context: int = Field(1, ge=0, description="unchanged lines shown around each change")
    include: list[str] = Field(default_factory=list, description="other text columns copied into the payload")


def unified_diff(before: str, after: str, *, context: int = 1, limit: int = 2000) -> str:
    """The line diff of two texts, at most ``limit`` characters plus a note of the rest.

    >>> print(unified_diff("Price: 20\\nIn stock", "Price: 18\\nIn stock"))
    --- before
    +++ after
    @@ -1,2 +1,2 @@
    -Price: 20
    +Price: 18
     In stock
    """
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", n=context, lineterm="")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[:limit] + f"\n... ({len(text) - limit} more characters)"
    return text


def difference(before: str, after: str) -> float:
    """``1 - ratio`` of the two texts (by characters, or by lines when either is long)."""
    if before == after:
        return 0.0
    if len(before) <= _CHARS and len(after) <= _CHARS:
        matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    else:
        matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines())
    return 1.0 - matcher.ratio()


class Change(Configured):
    """Fires when a key's text changed by at least ``min_ratio`` (see the module doc).

    ``Scores.score`` is the difference (0 to 1); ``details``: ``difference``, ``length``
    and ``previous_length`` (characters); ``extras``: ``diff`` on flagged rows and the
    ``include`` columns.

    >>> det = Change(column="text", min_ratio=0.2)
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> texts = ["Opening hours: 9-17", "Opening hours: 9-18", "Closed for holidays"]
    >>> for tick, text in enumerate(texts):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["shop"]),
    ...         times=np.array([start + np.timedelta64(tick, "D")]),
    ...         columns={},
    ...         texts={"text": np.array([text], dtype=object)},
    ...     ))
    ...     print(tick, scores.flags, scores.score.round(3))
    0 [False] [nan]
    1 [False] [0.053]
    2 [ True] [0.737]
    >>> print(scores.extras["diff"][0])
    --- before
    +++ after
    @@ -1 +1 @@
    -Opening hours: 9-18
    +Closed for holidays
    """

    kind: ClassVar[str] = "change"
    Options: ClassVar[type[BaseModel]] = ChangeOptions
    column: str
    min_ratio: float
    max_diff: int
    context: int
    include: list[str]

    def __init__(
        self,
        column: str = "text",
        min_ratio: float = 0.05,
        max_diff: int = 2000,
        context: int = 1,
        include: list[str] | None = None,
    ) -> None:
        super().__init__(column=column, min_ratio=min_ratio, max_diff=max_diff, context=context, include=include or [])
        self._last: dict[str, str] = {}

    @classmethod
    def needs(cls, options: ChangeOptions) -> Schema:
        needs: dict[str, ColumnKind] = {options.column: "text"}
        needs.update(dict.fromkeys(options.include, "text"))
        return needs

    @classmethod
    def outcome(cls, options: ChangeOptions) -> OutcomeRule:
        """None: a changed text has no value or direction to follow."""
        return OutcomeRule(
            "none", reason="a page change is news when it happens: a text has no value or direction to follow after it"
        )

    def update(self, frame: Frame) -> Scores:
        texts = frame.texts[self.column]
        n = len(frame)
        score = np.full(n, np.nan)
        length = np.full(n, np.nan)
        previous_length = np.full(n, np.nan)
        diffs = np.full(n, None, dtype=object)
        last = self._last
        for i, (key, text) in enumerate(zip(frame.keys.tolist(), texts.tolist(), strict=True)):
            if not isinstance(text, str):
                continue
            length[i] = len(text)
            before = last.get(key)
            last[key] = text
            if before is None:
                continue
            previous_length[i] = len(before)
            score[i] = difference(before, text)
            if score[i] >= self.min_ratio:
                diffs[i] = unified_diff(before, text, context=self.context, limit=self.max_diff)
        flags = score >= self.min_ratio
        details = {"difference": score, "length": length, "previous_length": previous_length}
        extras: dict[str, Any] = {"diff": diffs, **{name: frame.texts[name] for name in self.include}}
        return Scores(frame.keys, frame.times, score.copy(), flags, details, extras)
