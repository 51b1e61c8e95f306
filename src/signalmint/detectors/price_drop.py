"""Price drop: a shop item's price fell by at least ``pct`` percent or ``amount`` vs its last price.

The rule, per key (an item), for a price ``p`` and the item's last seen price ``q``::

    drop     = q - p
    drop_pct = 100 * drop / q
    flag     = q > 0 and p < q and (drop_pct >= pct or drop >= amount)

Either or both of ``pct`` and ``amount`` are set; with both, either one fires. The
comparisons allow a relative 1e-9 for float rounding (19.99 -> 17.99 is a drop of 2).
``q`` is the last price seen, whether it fired or not, so a slow slide of small cuts does
not add up to a signal, and a price that goes back up and drops again fires again. A
missing (NaN) price is skipped and the item's last price stays. The first price of an item
only records it. Text columns named in ``include`` (a title, a url) go into the payload.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..records import Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured, KeyRows

__all__ = ["PriceDrop", "PriceDropOptions"]

_EPS = 1e-9


class PriceDropOptions(BaseModel):
    """Settings of :class:`PriceDrop`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("price", description="the price column")
    pct: float | None = Field(None, gt=0, description="minimum drop in percent of the last price")
    amount: float | None = Field(None, gt=0, description="minimum drop in price units")
    include: list[str] = Field(default_factory=list, description="text columns copied into the payload")

    @model_validator(mode="after")
    def _one_rule(self) -> PriceDropOptions:
        if self.pct is None and self.amount is None:
            raise ValueError("set `pct` (a percent) or `amount` (price units), or both")
        return self


class PriceDrop(Configured):
    """Fires when an item's price drops enough against its last price (see the module doc).

    ``Scores.score`` is the drop in percent; ``details``: ``price``, ``previous``,
    ``drop`` and ``drop_pct``; ``extras``: the ``include`` text columns.

    >>> det = PriceDrop(pct=10, include=["title"])
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> for tick, (a, b) in enumerate([(20.0, 100.0), (17.5, 95.0), (17.0, 80.0), (19.0, 79.0)]):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["sku-1", "sku-2"]),
    ...         times=np.full(2, start + np.timedelta64(tick, "h")),
    ...         columns={"price": np.array([a, b])},
    ...         texts={"title": np.array(["Kettle", "Toaster"], dtype=object)},
    ...     ))
    ...     print(tick, scores.flags, scores.score.round(2))
    0 [False False] [nan nan]
    1 [ True False] [12.5  5. ]
    2 [False  True] [ 2.86 15.79]
    3 [False False] [-11.76   1.25]
    """

    kind: ClassVar[str] = "price_drop"
    Options: ClassVar[type[BaseModel]] = PriceDropOptions
    column: str
    pct: float | None
    amount: float | None
    include: list[str]

    def __init__(
        self,
        column: str = "price",
        pct: float | None = None,
        amount: float | None = None,
        include: list[str] | None = None,
    ) -> None:
        super().__init__(column=column, pct=pct, amount=amount, include=include or [])
        self._state = KeyRows(last=(np.nan, np.float64))

    @classmethod
    def needs(cls, options: PriceDropOptions) -> Schema:
        return {options.column: "metric", **dict.fromkeys(options.include, "text")}

    @classmethod
    def outcome(cls, options: PriceDropOptions) -> OutcomeRule:
        """Did the drop hold: the price stayed at or below the alerted price."""
        return OutcomeRule("stays_down", column=options.column)

    def update(self, frame: Frame) -> Scores:
        price = np.asarray(frame.columns[self.column], dtype=np.float64)
        n = len(frame)
        previous = np.full(n, np.nan)
        rows, batches = self._state.locate(frame.keys)
        last = self._state["last"]
        seen = ~np.isnan(price)
        for batch in batches:
            previous[batch] = last[rows[batch]]
            sel = batch[seen[batch]]
            last[rows[sel]] = price[sel]
        drop = previous - price
        with np.errstate(divide="ignore", invalid="ignore"):
            drop_pct = np.where(previous > 0, 100.0 * drop / previous, np.nan)
        rule = np.zeros(n, dtype=bool)
        if self.pct is not None:
            rule |= drop_pct >= self.pct * (1 - _EPS)
        if self.amount is not None:
            rule |= drop >= self.amount * (1 - _EPS)
        flags = rule & (previous > 0) & (drop > 0)
        details = {"price": price, "previous": previous, "drop": drop, "drop_pct": drop_pct}
        extras = {name: frame.texts[name] for name in self.include}
        return Scores(frame.keys, frame.times, drop_pct.copy(), flags, details, extras)
