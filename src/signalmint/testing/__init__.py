"""Conformance suites that plugin authors can run against their own plugins.

Like river's ``yield_checks``: each check is a plain function that raises
``AssertionError`` with a message; run them all with :func:`check_detector` or
:func:`check_source`, or parametrize a pytest test over :func:`detector_checks`.
"""

from __future__ import annotations

from .channels import ChannelSink, channel_checks, check_channel
from .detectors import check_detector, detector_checks, example_frames
from .sources import check_source, source_checks

__all__ = [
    "ChannelSink",
    "channel_checks",
    "check_channel",
    "check_detector",
    "check_source",
    "detector_checks",
    "example_frames",
    "source_checks",
]
