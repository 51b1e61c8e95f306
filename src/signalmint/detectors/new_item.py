"""New item: an item key not seen before whose text matches keyword or regex filters.

For feeds, listings and search results, where each row is an item (a key such as a feed
entry's id or a product url, with text columns such as ``title`` and ``url``)::

    flag = key not in seen and (match is empty or any filter matches a text in `fields`)

A filter in ``match`` is a keyword, matched case-insensitively as a substring, or a
regular expression written between slashes (``/rust(lang)?/``), searched case-insensitively.
Every key is remembered once seen, matching or not, so an item edited later does not fire.

The memory is bounded: at most ``memory`` keys are kept, least recently seen first out
(an item still in the feed is seen again on every poll and stays). A key forgotten and
seen again fires again, so ``memory`` should exceed the number of distinct items a source
shows over its lifetime window (the default 100,000 keys take about 10-20 MB).

The first frame the detector sees is a feed's backlog: its items are remembered without
firing unless ``announce_existing`` is set. Every text column of the frame (cut to
``max_text`` characters) goes into the payload, with the filters that matched.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..records import ColumnKind, Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured

__all__ = ["NewItem", "NewItemOptions"]


def _compile(entry: str) -> re.Pattern[str]:
    if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
        return re.compile(entry[1:-1], re.IGNORECASE)
    return re.compile(re.escape(entry), re.IGNORECASE)


class NewItemOptions(BaseModel):
    """Settings of :class:`NewItem`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: list[str] = Field(default_factory=list, description="keywords or /regexes/; empty: every new item")
    fields: list[str] = Field(default_factory=lambda: ["title"], description="text columns the filters search")
    memory: int = Field(100_000, ge=1, description="how many keys are remembered (least recently seen out first)")
    announce_existing: bool = Field(False, description="fire for the items of the first frame too")
    max_text: int = Field(1000, ge=10, description="text columns in the payload are cut to this many characters")

    @field_validator("match")
    @classmethod
    def _valid_filters(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry:
                raise ValueError("an empty filter matches everything; leave `match` empty instead")
            try:
                _compile(entry)
            except re.error as exc:
                raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from None
        return value


class NewItem(Configured):
    """Fires for keys not seen before that match ``match`` (see the module doc).

    ``Scores.score`` is 1 for a new item, 0 for one seen before; ``details``: ``new``
    and ``matches`` (how many filters matched); ``extras``: ``matched`` (the filters, on
    flagged rows) and the frame's text columns.

    >>> det = NewItem(match=["python", "/\\\\brust\\\\b/"])
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> polls = [
    ...     [("a1", "Python 3.14 released"), ("a2", "Weather today")],
    ...     [("a1", "Python 3.14 released"), ("a3", "Rust 2.0 plans"), ("a4", "Trust issues")],
    ...     [("a5", "Why I left Python for Rust")],
    ... ]
    >>> for tick, poll in enumerate(polls):
    ...     scores = det.update(Frame(
    ...         keys=np.array([key for key, _ in poll]),
    ...         times=np.full(len(poll), start + np.timedelta64(tick, "h")),
    ...         columns={},
    ...         texts={"title": np.array([title for _, title in poll], dtype=object)},
    ...     ))
    ...     print(tick, scores.flags, scores.extras["matched"].tolist())
    0 [False False] [None, None]
    1 [False  True False] [None, ['/\\\\brust\\\\b/'], None]
    2 [ True] [['python', '/\\\\brust\\\\b/']]
    """

    kind: ClassVar[str] = "new_item"
    Options: ClassVar[type[BaseModel]] = NewItemOptions
    match: list[str]
    fields: list[str]
    memory: int
    announce_existing: bool
    max_text: int

    def __init__(
        self,
        match: list[str] | None = None,
        fields: list[str] | None = None,
        memory: int = 100_000,
        announce_existing: bool = False,
        max_text: int = 1000,
    ) -> None:
        super().__init__(
            match=match or [],
            fields=["title"] if fields is None else fields,
            memory=memory,
            announce_existing=announce_existing,
            max_text=max_text,
        )
        self._patterns = [_compile(entry) for entry in self.match]
        self._seen: dict[str, None] = {}  # insertion order = least recently seen first
        self._started = False

    @classmethod
    def needs(cls, options: NewItemOptions) -> Schema:
        needs: dict[str, ColumnKind] = dict.fromkeys(options.fields, "text") if options.match else {}
        return needs

    @classmethod
    def outcome(cls, options: NewItemOptions) -> OutcomeRule:
        """None: a new item is news when it appears; nothing about it is observed afterwards."""
        return OutcomeRule(
            "none", reason="a new item is news the moment it appears: nothing about it is observed afterwards"
        )

    def update(self, frame: Frame) -> Scores:
        n = len(frame)
        new = np.zeros(n)
        matches = np.zeros(n)
        flags = np.zeros(n, dtype=bool)
        matched = np.full(n, None, dtype=object)
        announce = self._started or self.announce_existing
        self._started = True
        seen, limit = self._seen, self.memory
        searched = [frame.texts[name].tolist() for name in self.fields if name in frame.texts] if self._patterns else []
        for i, key in enumerate(frame.keys.tolist()):
            if key in seen:
                del seen[key]  # seen again: moves to the most recent end
                seen[key] = None
                continue
            seen[key] = None
            if len(seen) > limit:
                del seen[next(iter(seen))]
            new[i] = 1.0
            if self._patterns:
                texts = [column[i] for column in searched if isinstance(column[i], str)]
                hits = [e for e, p in zip(self.match, self._patterns, strict=True) if any(p.search(t) for t in texts)]
                matches[i] = len(hits)
                if not hits:
                    continue
                matched[i] = hits
            if announce:
                flags[i] = True
        matched[~flags] = None
        extras: dict[str, Any] = {"matched": matched}
        for name, column in frame.texts.items():
            extras.setdefault(name, np.array([_cut(v, self.max_text) for v in column.tolist()], dtype=object))
        return Scores(frame.keys, frame.times, new.copy(), flags, {"new": new, "matches": matches}, extras)


def _cut(value: Any, limit: int) -> Any:
    return value[:limit] if isinstance(value, str) and len(value) > limit else value
