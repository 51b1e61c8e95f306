"""Detectors: one file per detector kind, plus wrappers such as :class:`Cooldown`."""

from __future__ import annotations

from .anomaly import Anomaly
from .change import Change
from .cooldown import Cooldown
from .new_item import NewItem
from .pct_move import PctMove
from .price_drop import PriceDrop
from .ranking import Ranking
from .restock import Restock
from .threshold import Threshold
from .volume_spike import VolumeSpike

__all__ = [
    "Anomaly",
    "Change",
    "Cooldown",
    "NewItem",
    "PctMove",
    "PriceDrop",
    "Ranking",
    "Restock",
    "Threshold",
    "VolumeSpike",
]
