"""Detectors: one file per detector kind, plus wrappers such as :class:`Cooldown`."""

from __future__ import annotations

from .anomaly import Anomaly
from .cooldown import Cooldown
from .volume_spike import VolumeSpike

__all__ = ["Anomaly", "Cooldown", "VolumeSpike"]
