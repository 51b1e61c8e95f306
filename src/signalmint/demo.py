"""The demo: two automations on bundled real data and a live synthetic market."""

from __future__ import annotations

from datetime import timedelta

from .config import AutomationConfig, DetectorConfig, PluginConfig, Settings, WebConfig

__all__ = ["demo_settings"]


def demo_settings(
    database: str, *, host: str = "127.0.0.1", port: int = 8000, speed: float = 1.0
) -> Settings:
    """Settings for ``signalmint demo``; ``speed`` multiplies the default pace of both feeds.

    At speed 1 the stock history replays ten trading days a second and the
    synthetic market makes one one-minute bar per second.
    """
    interval = 1.0 / speed
    volume_spike = {"window": 30, "ratio": 3.0, "z": 4.0}
    return Settings(
        database=database,
        web=WebConfig(host=host, port=port, title="signalmint demo"),
        checkpoint_every=timedelta(seconds=5),
        automations=[
            AutomationConfig(
                name="us-stocks-volume",
                title="US stocks · unusual volume",
                description=(
                    "Real daily volume of AAPL, GOOG, IBM, MSFT and FB (2000–2013, public domain), "
                    "replayed fast-forward. Every signal here is a real historical event."
                ),
                source=PluginConfig(kind="bokeh_stocks", pace=0.1 / speed),
                detector=DetectorConfig(kind="volume_spike", cooldown=timedelta(days=5), **volume_spike),
                retention=None,
            ),
            AutomationConfig(
                name="synthetic-volume",
                title="Synthetic market · 500 symbols",
                description=(
                    "A live simulated market of 500 symbols with spikes injected at known times; "
                    "one-minute bars compressed to one per second."
                ),
                source=PluginConfig(kind="synthetic", symbols=500, seed=7, interval=interval),
                detector=DetectorConfig(
                    kind="volume_spike", cooldown=timedelta(seconds=30 * interval), **volume_spike
                ),
                retention=timedelta(seconds=600 * interval),
            ),
        ],
    )
