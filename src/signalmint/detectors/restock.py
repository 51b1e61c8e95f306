"""Restock: a shop item comes back in stock (its availability column goes from 0 to 1).

The rule, per key (an item), for an availability ``a`` (1 or a stock count: in stock when
``> 0``) and the item's last seen availability ``b``::

    flag = b <= 0 and a > 0

The first value of an item only records it (an item first seen in stock is not a restock);
a missing (NaN) value is skipped and the last one stays. Text columns named in ``include``
(a title, a url) and the metric named by ``price_column`` go into the payload.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..records import ColumnKind, Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured, KeyRows

__all__ = ["Restock", "RestockOptions"]


class RestockOptions(BaseModel):
    """Settings of :class:`Restock`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("in_stock", description="availability: 0 out of stock, > 0 in stock")
    price_column: str | None = Field(None, description="a metric copied into the payload as `price`")
    include: list[str] = Field(default_factory=list, description="text columns copied into the payload")


class Restock(Configured):
    """Fires when an item's availability goes from 0 to in stock (see the module doc).

    ``Scores.score`` is the new availability; ``details``: ``in_stock``, ``previous``
    (and ``price`` with ``price_column``); ``extras``: the ``include`` text columns.

    >>> det = Restock()
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> for tick, (a, b) in enumerate([(0, 1), (1, 0), (1, 0), (0, 3), (1, np.nan), (1, 1)]):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["sku-1", "sku-2"]),
    ...         times=np.full(2, start + np.timedelta64(tick, "h")),
    ...         columns={"in_stock": np.array([a, b], dtype=float)},
    ...     ))
    ...     print(tick, scores.flags)
    0 [False False]
    1 [ True False]
    2 [False False]
    3 [False  True]
    4 [ True False]
    5 [False False]
    """

    kind: ClassVar[str] = "restock"
    Options: ClassVar[type[BaseModel]] = RestockOptions
    column: str
    price_column: str | None
    include: list[str]

    def __init__(
        self, column: str = "in_stock", price_column: str | None = None, include: list[str] | None = None
    ) -> None:
        super().__init__(column=column, price_column=price_column, include=include or [])
        self._state = KeyRows(last=(np.nan, np.float64))

    @classmethod
    def needs(cls, options: RestockOptions) -> Schema:
        needs: dict[str, ColumnKind] = {options.column: "metric"}
        needs.update(dict.fromkeys(options.include, "text"))
        if options.price_column:
            needs[options.price_column] = "metric"
        return needs

    @classmethod
    def outcome(cls, options: RestockOptions) -> OutcomeRule:
        """Did the item stay in stock."""
        return OutcomeRule("stays_in_stock", column=options.column)

    def update(self, frame: Frame) -> Scores:
        stock = np.asarray(frame.columns[self.column], dtype=np.float64)
        previous = np.full(len(frame), np.nan)
        rows, batches = self._state.locate(frame.keys)
        last = self._state["last"]
        seen = ~np.isnan(stock)
        for batch in batches:
            previous[batch] = last[rows[batch]]
            sel = batch[seen[batch]]
            last[rows[sel]] = stock[sel]
        flags = (previous <= 0) & (stock > 0)
        details = {"in_stock": stock, "previous": previous}
        if self.price_column:
            details["price"] = np.asarray(frame.columns[self.price_column], dtype=np.float64)
        extras = {name: frame.texts[name] for name in self.include}
        return Scores(frame.keys, frame.times, stock.copy(), flags, details, extras)
