"""What the small detectors share: options stored under their own names, per-key state rows.

:class:`Configured` validates the constructor's keyword arguments with the class's pydantic
``Options`` (a :class:`~signalmint.errors.DetectorError` names what is wrong), stores each
under its own name and gives a ``repr`` that round-trips. :class:`KeyRows` maps keys to rows
of numpy state arrays that grow geometrically, and :func:`rounds` splits a frame's rows into
rounds in which every key appears at most once, so a detector can update all keys of a round
with one set of numpy operations and still see repeated keys in row order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from ..errors import DetectorError
from ..records import Frame, Scores

__all__ = ["Configured", "KeyRows", "rounds", "update_in_rounds"]

IntArray = npt.NDArray[np.intp]


class Configured:
    """Options in, attributes out: ``cls(**options)`` with the options of ``cls.Options``."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, **options: Any) -> None:
        try:
            validated = self.Options.model_validate(options)
        except ValidationError as exc:
            raise DetectorError(f"{type(self).__name__}: invalid options\n{exc}") from None
        self.options = validated
        for name in type(validated).model_fields:
            setattr(self, name, getattr(validated, name))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self.options).model_fields)
        return f"{type(self).__name__}({args})"


class KeyRows:
    """Rows of per-key state: ``rows(keys)`` gives each key its row, new keys new rows.

    ``arrays`` are the state columns (name -> array with one row per key), declared as
    ``name=(fill, dtype)`` or ``name=(fill, dtype, width)`` for a row of ``width`` values
    (a ring of recent values), each grown with its ``fill`` when keys are added.
    Picklable as plain data.
    """

    def __init__(self, **fills: tuple[Any, ...]) -> None:
        self.index: dict[str, int] = {}
        self.fills = {name: spec[0] for name, spec in fills.items()}
        self.arrays: dict[str, npt.NDArray[Any]] = {
            name: np.full((0, *spec[2:]), spec[0], dtype=spec[1]) for name, spec in fills.items()
        }

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.arrays[name]

    def rows(self, keys: npt.NDArray[Any]) -> IntArray:
        """Each key's row (new keys get new rows). The answer for the last keys is cached:
        the next tick usually has the same keys, and equal bytes are equal keys."""
        return self.locate(keys)[0]

    def locate(self, keys: npt.NDArray[Any]) -> tuple[IntArray, list[IntArray]]:
        """Each key's row, and the row positions in :func:`rounds`."""
        cache = getattr(self, "_cache", None)
        raw = keys.tobytes() if keys.dtype.kind in "US" else None
        if cache is not None and raw is not None and cache[0] == keys.dtype and cache[1] == raw:
            return cache[2], cache[3]
        index = self.index
        rows = np.fromiter((index.setdefault(k, len(index)) for k in keys.tolist()), dtype=np.intp, count=len(keys))
        self._grow(len(index))
        found = (rows, list(rounds(rows)))
        self._cache = (keys.dtype, raw, *found) if raw is not None else None
        return found

    def __getstate__(self) -> dict[str, Any]:
        return {"index": self.index, "fills": self.fills, "arrays": self.arrays}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _grow(self, n: int) -> None:
        have = len(next(iter(self.arrays.values()))) if self.arrays else n
        if n <= have:
            return
        size = max(n, 2 * have, 16)
        for name, array in self.arrays.items():
            grown = np.full((size, *array.shape[1:]), self.fills[name], dtype=array.dtype)
            grown[:have] = array
            self.arrays[name] = grown


def rounds(keys: npt.NDArray[Any]) -> Iterator[IntArray]:
    """Row positions in rounds: each key (or state row) at most once per round, in row order.

    >>> [r.tolist() for r in rounds(np.array(["a", "b", "a", "a"]))]
    [[0, 1], [2], [3]]
    """
    n = len(keys)
    if n < 2:
        yield np.arange(n)
        return
    if keys.dtype.kind in "iu" and len(np.unique(keys)) == n:  # state rows: cheap to check
        yield np.arange(n)
        return
    _, group = np.unique(keys, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1]
    if len(starts) == n:  # every key once: one round
        yield np.arange(n)
        return
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    occurrence = np.empty(n, dtype=np.intp)
    occurrence[order] = np.arange(n) - run_start
    for r in range(int(occurrence.max()) + 1):
        yield np.flatnonzero(occurrence == r)


def update_in_rounds(frame: Frame, update: Callable[[Frame], Scores], details: Iterable[str]) -> Scores:
    """Scores of a frame with repeated keys: ``update`` over each round of :func:`rounds` in turn,
    so a key's k-th row sees the state its (k-1)-th row left; the scores come back in row order."""
    n, names = len(frame), tuple(details)
    score = np.empty(n)
    flags = np.empty(n, dtype=np.bool_)
    found = {name: np.empty(n) for name in names}
    for where in rounds(frame.keys):
        part = update(frame.take(where))
        score[where] = part.score
        flags[where] = part.flags
        for name in names:
            found[name][where] = part.details[name]
    return Scores(frame.keys, frame.times, score, flags, found)
