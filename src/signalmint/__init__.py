"""signalmint: turn a data feed into a paid alert service that runs by itself."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
