"""Every registered plugin, built-in or not, passes its kind's conformance suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from signalmint.registry import Registry
from signalmint.testing import detector_checks, source_checks

REGISTRY = Registry.from_entry_points()


def _csv(tmp: Path) -> str:
    rng = np.random.default_rng(1)
    rows = []
    for t in range(60):
        for key in ("A", "B", "C"):
            rows.append(
                {
                    "symbol": key,
                    "time": f"2024-01-02T14:{t:02d}:00Z",
                    "open": 10.0,
                    "high": 11.0,
                    "low": 9.0,
                    "close": 10.5,
                    "volume": float(rng.lognormal(5, 0.2)),
                }
            )
    path = tmp / "bars.csv"
    pl.DataFrame(rows).write_csv(path)
    return str(path)


#: Options that make each built-in source quick to test. A new entry point must be added here.
SOURCE_OPTIONS: dict[str, Any] = {
    "synthetic": lambda tmp: {"symbols": 30, "interval": 0.001, "warmup": 40},
    "bokeh_stocks": lambda tmp: {"pace": 0.0},
    "file": lambda tmp: {"path": _csv(tmp)},
}
DETECTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "anomaly": {"column": "volume", "warmup": 20},
    "volume_spike": {"window": 10},
}


def test_every_plugin_is_covered() -> None:
    assert set(REGISTRY.sources) == set(SOURCE_OPTIONS)
    assert set(REGISTRY.detectors) == set(DETECTOR_OPTIONS)


@pytest.mark.parametrize("kind", sorted(DETECTOR_OPTIONS))
@pytest.mark.parametrize("check", list(detector_checks()), ids=lambda c: c.__name__)
def test_detector_conformance(kind: str, check: Any) -> None:
    check(lambda: REGISTRY.build("detector", kind, DETECTOR_OPTIONS[kind]))


@pytest.mark.parametrize("kind", sorted(SOURCE_OPTIONS))
@pytest.mark.parametrize("check", list(source_checks()), ids=lambda c: c.__name__)
def test_source_conformance(kind: str, check: Any, tmp_path: Path) -> None:
    options = SOURCE_OPTIONS[kind](tmp_path)
    check(lambda: REGISTRY.build("source", kind, options))
