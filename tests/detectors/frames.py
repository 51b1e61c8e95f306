"""Small frames for hand-computed detector cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from signalmint.records import Frame

START = np.datetime64("2024-01-02T09:00", "ns")


def frame(
    keys: Sequence[str],
    minute: int | Sequence[int] = 0,
    texts: Mapping[str, Sequence[Any]] | None = None,
    **columns: Sequence[float],
) -> Frame:
    """Rows of ``keys`` at ``minute`` (one for all, or one per row) with the given columns."""
    n = len(keys)
    minutes = np.full(n, minute) if isinstance(minute, int) else np.asarray(minute)
    return Frame(
        keys=np.array(keys, dtype=str),
        times=START + minutes.astype("timedelta64[m]"),
        columns={name: np.asarray(values, dtype=np.float64) for name, values in columns.items()},
        texts={name: np.array(list(values), dtype=object) for name, values in (texts or {}).items()},
    )


def stream(detector: Any, frames: Sequence[Frame]) -> list[list[bool]]:
    """The flags of each frame, as lists."""
    return [detector.update(f).flags.tolist() for f in frames]
