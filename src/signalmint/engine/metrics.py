"""Prometheus metrics, one registry per process object (never the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """Every counter signalmint exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bars = Counter("signalmint_bars", "Bars accepted from sources", ["automation"], registry=r)
        self.rejected = Counter(
            "signalmint_rows_rejected",
            "Rows rejected by source validation",
            ["automation", "reason"],
            registry=r,
        )
        self.signals = Counter("signalmint_signals", "Signals committed to the log", ["automation"], registry=r)
        self.tick_seconds = Histogram(
            "signalmint_tick_seconds",
            "Time to detect and commit one tick",
            ["automation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.last_bar = Gauge(
            "signalmint_last_bar_timestamp_seconds",
            "Time of the newest committed bar",
            ["automation"],
            registry=r,
        )
        self.engine_up = Gauge(
            "signalmint_automation_running",
            "1 while the automation's engine task runs",
            ["automation"],
            registry=r,
        )
        self.engine_errors = Counter(
            "signalmint_engine_errors",
            "Errors that restarted an automation's engine task",
            ["automation"],
            registry=r,
        )
        self.stale = Gauge(
            "signalmint_automation_stale",
            "1 while the automation gets no bars within its stale_after (market open)",
            ["automation"],
            registry=r,
        )
        self.last_bar_age = Gauge(
            "signalmint_last_bar_age_seconds",
            "Engine clock minus the newest committed bar's time, at the last staleness check",
            ["automation"],
            registry=r,
        )
        self.gaps = Counter(
            "signalmint_gaps", "Bars that skipped at least one candle of their key", ["automation"], registry=r
        )
        self.missing_bars = Counter("signalmint_missing_bars", "Candles skipped in gaps", ["automation"], registry=r)
        self.late_signals = Counter(
            "signalmint_late_signals",
            "Signals stored as late (older than max_signal_age when committed; not alerted)",
            ["automation"],
            registry=r,
        )
        self.leases_held = Gauge(
            "signalmint_engine_leases_held", "Automations this engine holds a lease on (and runs)", registry=r
        )
        self.live_engines = Gauge(
            "signalmint_engine_live_engines", "Engines whose heartbeat has not run out, as this engine counts them",
            registry=r,
        )  # fmt: skip
        self.lease_epoch = Gauge(
            "signalmint_engine_lease_epoch",
            "Epoch of this engine's lease on the automation (0: not held here)",
            ["automation"],
            registry=r,
        )
        self.lease_takeovers = Counter(
            "signalmint_engine_lease_takeovers",
            "Automations this engine took over from an engine whose lease ran out",
            ["automation"],
            registry=r,
        )
        self.leases_lost = Counter(
            "signalmint_engine_leases_lost",
            "Leases this engine found taken over (it was paused or cut off past its lease)",
            ["automation"],
            registry=r,
        )
        self.http_requests = Counter(
            "signalmint_http_requests", "HTTP requests served", ["method", "route", "status"], registry=r
        )
        self.sse_clients = Gauge("signalmint_sse_clients", "Open server-sent event streams", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
