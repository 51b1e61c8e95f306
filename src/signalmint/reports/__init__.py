"""Premium reports: scheduled, rendered once per period into HTML and PDF, gated and sold.

``spec`` (definitions, periods, schedules) imports nothing else of signalmint, because
``config.py`` imports it; import the rest from their modules (``reports.build``,
``reports.render``, ``reports.scheduler``).
"""

from __future__ import annotations

from ..config.reports import AudienceConfig, ContentsConfig, Period, ReportConfig, due_periods, parse_period

__all__ = ["AudienceConfig", "ContentsConfig", "Period", "ReportConfig", "due_periods", "parse_period"]
