"""Wires stage to stage: config -> source and detector; scores -> signals."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import AutomationConfig
from .detectors.cooldown import Cooldown
from .records import Automation, Scores, Signal, to_datetime
from .registry import Detector, Registry, Source

__all__ = ["Pipeline", "build_detector", "build_pipeline", "describe", "signals_from_scores"]

#: Scores above this (or infinite) are stored as this; a window with no spread gives z = inf.
MAX_SCORE = 1e6


@dataclass
class Pipeline:
    automation: Automation
    source: Source
    detector: Detector
    fingerprint: str


def describe(config: AutomationConfig) -> Automation:
    return Automation(
        name=config.name,
        title=config.display_title,
        description=config.description,
        source_kind=config.source.kind,
        detector_kind=config.detector.kind,
        detector_options={**config.detector.options, "cooldown": config.detector.cooldown.total_seconds()},
    )


def build_detector(config: AutomationConfig, registry: Registry) -> tuple[Detector, Detector]:
    """The automation's detector as it runs live (wrapped in its cooldown, if any), and the
    detector inside the wrapper. Backtests build theirs here too."""
    inner: Detector = registry.build("detector", config.detector.kind, config.detector.options)
    if config.detector.cooldown.total_seconds() > 0:
        return Cooldown(inner, config.detector.cooldown), inner
    return inner, inner


def build_pipeline(config: AutomationConfig, registry: Registry) -> Pipeline:
    source = registry.build("source", config.source.kind, config.source.options)
    detector, inner = build_detector(config, registry)
    if getattr(source, "warmup", 0) is None:  # a live source backfills what the detector needs
        source.warmup = getattr(inner, "warmup", None) or getattr(inner, "window", None)
    options = {
        "kind": config.detector.kind,
        **config.detector.options,
        "cooldown": str(config.detector.cooldown),
    }
    fingerprint = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Pipeline(describe(config), source, detector, fingerprint)


def signals_from_scores(automation: str, kind: str, scores: Scores) -> list[Signal]:
    """One :class:`Signal` per flagged row, its payload the detector's details for that row
    (numbers) and its extras (text and other JSON values; a ``None`` is left out)."""
    flagged = np.flatnonzero(scores.flags)
    out: list[Signal] = []
    for i in flagged.tolist():
        payload: dict[str, Any] = {name: float(values[i]) for name, values in scores.details.items()}
        for name, objects in scores.extras.items():
            if objects[i] is not None:
                payload[name] = objects[i]
        score = float(scores.score[i])
        score = MAX_SCORE if not np.isfinite(score) or score > MAX_SCORE else score
        out.append(
            Signal(
                automation=automation,
                key=str(scores.keys[i]),
                time=to_datetime(scores.times[i]),
                kind=kind,
                score=score,
                payload=payload,
            )
        )
    return out
