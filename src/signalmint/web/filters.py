"""Jinja filters that turn signal numbers and times into what a reader expects.

The formatters themselves live in :mod:`signalmint.formatting`, shared with the channels'
messages; this module installs them into a template environment.
"""

from __future__ import annotations

import jinja2

from ..formatting import (
    direction,
    fmt_ago,
    fmt_date,
    fmt_iso,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    fmt_time,
    fmt_value,
    fmt_z,
    ratio_tier,
    short_hash,
)

__all__ = ["register_filters"]


def register_filters(env: jinja2.Environment) -> None:
    """Install every filter above into ``env`` under its own name."""
    env.filters.update(
        direction=direction,
        fmt_ago=fmt_ago,
        fmt_date=fmt_date,
        fmt_iso=fmt_iso,
        fmt_num=fmt_num,
        fmt_pct=fmt_pct,
        fmt_ratio=fmt_ratio,
        fmt_time=fmt_time,
        fmt_value=fmt_value,
        fmt_z=fmt_z,
        ratio_tier=ratio_tier,
        short_hash=short_hash,
    )
