"""YAML configuration -> validated :class:`Settings`.

Errors never show a traceback: every problem becomes a :class:`ConfigError`
naming the file, the line, the key path (``automations[0].detector.ratio``)
and, where we can tell, what to write instead.

Secrets come from the environment: ``${VAR}`` (required) or
``${VAR:-default}`` anywhere inside a string value.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError
from ..records import PULL_CHANNELS, Plan
from ..registry import (
    Registry,
    all_channels,
    channel_class,
    channel_kinds,
    declared,
    in_display_order,
    missing_columns,
)
from .reports import ReportConfig

__all__ = [
    "AutomationConfig",
    "EngineConfig",
    "OperatorConfig",
    "Settings",
    "TelegramConfig",
    "WebConfig",
    "demo_exposure",
    "load_settings",
    "loopback_host",
    "parse_duration",
    "parse_settings",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> Any:
    """Durations as ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` or seconds.

    >>> parse_duration("15m")
    datetime.timedelta(seconds=900)
    >>> parse_duration(2.5)
    datetime.timedelta(seconds=2, microseconds=500000)
    """
    if isinstance(value, timedelta) or value is None:
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 15m, 2h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 15m, 2h or 7d")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginConfig(BaseModel):
    """``kind`` picks the plugin; the other keys are that plugin's own options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str = Field(description="the plugin's name, e.g. synthetic, file, bokeh_stocks")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DetectorConfig(PluginConfig):
    kind: str = Field(description="the detector's name, e.g. volume_spike")
    cooldown: Duration = Field(
        default=timedelta(0),
        description="after a signal for a key, further signals for it are held back this long",
    )


class OutcomesConfig(_Strict):
    """What happened after each signal (market automations): see README, "Outcomes"."""

    horizons: list[int] = Field(
        default=[1, 5, 20], min_length=1, max_length=8,
        description="bars (see `unit`) after a signal at which its outcome is measured",
    )  # fmt: skip
    baseline_samples: int = Field(
        default=200, ge=10, le=5000, description="random earlier bars of the same key forming the baseline"
    )
    lookback: int = Field(default=500, ge=20, le=100_000, description="bars before a signal the baseline draws from")
    seed: int = Field(default=0, ge=0, description="seed of the baseline's random draw (reproducible outcomes)")
    unit: Literal["bars", "seconds", "minutes", "hours", "days"] = Field(
        default="bars",
        description="what horizons count: bars (for other detectors, observations of the key or rankings), or "
        "a time after the signal (price, stock and metric outcomes; right for sources that report changes only)",
    )
    every: Duration = Field(default=timedelta(seconds=60), description="how often the engine computes due outcomes")

    @field_validator("horizons")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 or h > 10_000 for h in value):
            raise ValueError("horizons are numbers of bars between 1 and 10000")
        return sorted(set(value))


class AutomationConfig(_Strict):
    name: str = Field(pattern=_NAME, description="id in URLs and the API: lowercase, digits, - and _")
    title: str = Field(default="", description="human title shown on the pages")
    description: str = Field(default="", description="one or two sentences for the public page")
    source: PluginConfig = Field(description="where the data comes from")
    detector: DetectorConfig = Field(description="how data turns into signals")
    retention: Duration | None = Field(
        default=timedelta(days=30),
        description="how long raw bars are kept for charts, counted back from the newest bar (null keeps everything)",
    )
    outcomes: OutcomesConfig | None = Field(
        default=None,
        description="measure each signal's return and volume after it, against a random-bar baseline "
        "(market bars only; unset: off)",
    )
    enabled: bool = Field(default=True, description="false keeps the automation's history but stops it")
    cadence: Duration | None = Field(
        default=None,
        description="time between two bars of a key; unset: the source's own (synthetic: its interval, "
        "a ccxt-like source: its timeframe; file and bokeh_stocks replays: none)",
    )
    stale_after: Duration | None = Field(
        default=None,
        description="no bar for this long while the market is open makes the automation stale "
        "(unset: stale_factor x cadence, for live sources only)",
    )
    stale_factor: float = Field(
        default=3.0, gt=0, le=1000, description="k in k x cadence, the default of stale_after and max_signal_age"
    )
    max_signal_age: Duration | None = Field(
        default=None,
        description="a signal whose bar is older than this when it is committed is stored as late and not "
        "sent as an alert (unset: stale_factor x cadence for live sources, never for replays)",
    )
    gap_reset: Duration | None = Field(
        default=None,
        description="a key whose bars skip more than this restarts its detector warm-up (unset: 10 x cadence)",
    )
    calendar: Literal["always", "us_equities"] | None = Field(
        default=None,
        description="market hours for staleness and gaps: always (24/7) or us_equities (NYSE hours and "
        "holidays); unset: the source's own, else always",
    )
    reports: list[ReportConfig] = Field(
        default_factory=list, description="premium reports rendered on a schedule (README, Reports)"
    )

    @field_validator("reports")
    @classmethod
    def _report_names(cls, value: list[ReportConfig]) -> list[ReportConfig]:
        names = [r.name for r in value]
        if len(set(names)) != len(names):
            raise ValueError(f"two reports share a name in {names}; names must be unique per automation")
        return value

    @property
    def display_title(self) -> str:
        return self.title or self.name.replace("-", " ").replace("_", " ").capitalize()


class PlanConfig(_Strict):
    """One plan: a price and what it entitles to. Changing its terms creates a new version."""

    id: str = Field(pattern=_NAME, description="stable id, e.g. free, premium, pro")
    name: str = Field(default="", description="name shown to subscribers")
    description: str = Field(default="", description="one line shown on the pricing card")
    automations: list[str] | Literal["*"] = Field(
        default="*", description='the automations it covers ("*": all), several make a bundle'
    )
    price: int = Field(default=0, ge=0, description="price in minor units (2900 = 29.00), 0 is free")
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$", description="ISO 4217 code, lowercase")
    interval: Literal["month", "year"] = Field(default="month", description="billing interval")
    trial_days: int = Field(default=0, ge=0, le=365, description="free trial before the first charge")
    grace: Duration = Field(default=timedelta(days=3), description="past_due subscribers keep access this long")
    delay: Duration = Field(default=timedelta(0), description="signals reach this plan this long after they happen")
    keys: list[str] | None = Field(default=None, description="only these keys (symbols); unset: all")
    watchlist: int | None = Field(
        default=None, ge=1, le=10_000, description="subscribers choose at most this many keys"
    )
    channels: list[str] = Field(default_factory=lambda: ["web"], description="channels allowed")
    masked_fields: list[str] = Field(
        default_factory=list, description="payload fields (or score) this plan never sees; * hides all"
    )
    alerts_per_day: int | None = Field(default=None, ge=0, description="at most this many alerts a day")
    api_quota: int | None = Field(default=None, ge=0, description="API calls a calendar month (unset: unlimited)")
    overage_price: int = Field(
        default=0, ge=0, description="minor units per API call beyond the quota (0: refuse them)"
    )
    rate_per_second: float = Field(default=2.0, gt=0, le=10_000, description="API token-bucket refill rate")
    burst: int = Field(default=10, ge=1, le=100_000, description="API token-bucket size")
    public: bool = Field(default=True, description="listed on the public pricing cards")
    alert_price: int = Field(
        default=0, ge=0, description="pay per alert: micro-units of credit each delivered alert costs (0: included)"
    )

    reveal_after: Duration | None = Field(
        default=None,
        description="masked fields show once a signal is this old (e.g. 24h): the track record sells; unset: never",
    )

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        known = all_channels()  # the pull channels and every installed signalmint.channels plugin
        unknown = sorted(set(value) - set(known))
        if unknown:
            shown = [*PULL_CHANNELS, *in_display_order(channel_kinds())]  # loads the channel classes: errors only
            raise ValueError(f"unknown channel(s) {unknown}; use any of {shown}")
        return value

    @model_validator(mode="after")
    def _one_key_rule(self) -> PlanConfig:
        if self.keys is not None and self.watchlist is not None:
            raise ValueError("set either keys (a fixed list) or watchlist (subscribers choose), not both")
        if "api" not in self.channels and (self.api_quota is not None or self.overage_price):
            raise ValueError(
                "api_quota and overage_price are terms of API access, which this plan does not sell: "
                "add api to channels, or drop them"
            )
        return self

    def to_plan(self, version: int) -> Plan:
        automations = ("*",) if self.automations == "*" else tuple(self.automations)
        return Plan(
            id=self.id,
            version=version,
            name=self.name or self.id.capitalize(),
            automations=automations,
            price=self.price,
            currency=self.currency,
            interval=self.interval,
            trial_days=self.trial_days,
            grace_days=max(0, round(self.grace.total_seconds() / 86400)),
            delay=self.delay,
            keys=tuple(self.keys) if self.keys is not None else None,
            watchlist=self.watchlist,
            channels=frozenset(self.channels),
            masked_fields=frozenset(self.masked_fields),
            alerts_per_day=self.alerts_per_day,
            api_quota=self.api_quota,
            overage_price=self.overage_price,
            rate_per_second=self.rate_per_second,
            burst=self.burst,
            public=self.public,
            description=self.description,
            alert_price=self.alert_price,
            reveal_after=self.reveal_after,
        )


class TelegramConfig(_Strict):
    token: str | None = Field(default=None, description="the bot's token from @BotFather, from ${ENV}")
    bot: str | None = Field(default=None, description="the bot's username, for t.me deep links")
    base_url: str = Field(default="https://api.telegram.org", description="Bot API address (tests use a local one)")


class DeliveryConfig(_Strict):
    allow_loopback_targets: bool = Field(
        default=False,
        description="let webhooks reach loopback addresses (127.0.0.0/8, ::1): local testing only; "
        "private ranges stay refused",
    )
    concurrency: int = Field(default=256, ge=1, le=10_000, description="sends in flight per worker")
    batch: int = Field(default=500, ge=1, le=10_000, description="deliveries claimed per round")
    lease: Duration = Field(
        default=timedelta(seconds=60), description="a claimed delivery returns to the queue after this"
    )
    poll: Duration = Field(
        default=timedelta(milliseconds=100),
        description="an idle worker looks for due deliveries this often (shorter: lower latency, more queries)",
    )
    apprise_extra_schemes: list[str] = Field(
        default_factory=list,
        description="Apprise schemes allowed besides the reviewed ones (README, Apprise and SSRF): knowingly",
    )

    @field_validator("poll")
    @classmethod
    def _poll(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=1) <= value <= timedelta(seconds=60):
            raise ValueError("poll must be between 1ms and 60s, e.g. 50ms")
        return value

    @field_validator("apprise_extra_schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", s)]
        if bad:
            raise ValueError(f"{bad}: write bare lowercase schemes, e.g. [rsyslog] (no '://')")
        return value


class EngineConfig(_Strict):
    """How engine processes share the automations (README, "Scale-out")."""

    lease: Duration = Field(
        default=timedelta(seconds=15),
        description="an engine holds each automation it runs this long past its last heartbeat; a dead "
        "engine's automations move to a live one after it",
    )
    heartbeat: Duration = Field(
        default=timedelta(seconds=5), description="how often an engine renews its leases and rebalances"
    )

    @model_validator(mode="after")
    def _beats_within_lease(self) -> EngineConfig:
        if self.lease.total_seconds() < 0.2:
            raise ValueError("engine.lease must be at least 0.2s (15s is a good default)")
        if self.heartbeat.total_seconds() <= 0 or self.heartbeat * 2 > self.lease:
            raise ValueError(
                f"engine.heartbeat ({self.heartbeat}) must be positive and at most half of engine.lease "
                f"({self.lease}) so a live engine renews in time"
            )
        return self


class StripeConfig(_Strict):
    secret_key: str | None = Field(default=None, description="secret API key (sk_...), from ${ENV}")
    webhook_secret: str | None = Field(default=None, description="webhook signing secret (whsec_...), from ${ENV}")
    base_url: str = Field(
        default="https://api.stripe.com", description="API address (tests point it at a local server)"
    )
    meter_event: str = Field(default="api_overage", description="Billing meter event name for API overage")
    tolerance: Duration = Field(
        default=timedelta(minutes=5), description="webhook timestamps further off than this (past or future): refused"
    )


class FeeModel(_Strict):
    percent: float = Field(default=2.9, ge=0, le=100, description="processing fee, percent of each payment")
    fixed: int = Field(default=30, ge=0, description="processing fee, minor units per payment")
    warn_above: float = Field(
        default=15.0, ge=0, le=100, description="warn when fees take more than this percent of a price"
    )


class CreditsConfig(_Strict):
    packs: list[int] = Field(
        default_factory=lambda: [500, 1000, 2500], description="top-up amounts offered, in minor units"
    )
    minimum: int = Field(default=100, ge=1, description="smallest top-up, in minor units")


class TipsConfig(_Strict):
    enabled: bool = Field(default=True, description="show a tip jar on automation pages and in the bot")
    suggested: list[int] = Field(
        default_factory=lambda: [300, 500, 1000], description="tip amounts offered, in minor units"
    )
    minimum: int = Field(default=100, ge=1, description="smallest tip, in minor units")
    maximum: int = Field(default=100_000, ge=1, description="largest tip, in minor units")


class BillingConfig(_Strict):
    provider: Literal["local", "stripe", "manual"] = Field(
        default="local",
        description="who takes payments: local (test mode, no money moves), stripe, or manual (recorded by hand)",
    )
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$", description="currency of credits and tips")
    stripe: StripeConfig = Field(default_factory=StripeConfig)
    fees: FeeModel = Field(default_factory=FeeModel)
    credits: CreditsConfig = Field(default_factory=CreditsConfig)
    tips: TipsConfig = Field(default_factory=TipsConfig)
    dunning_email: bool = Field(default=True, description="email subscribers whose payment failed")

    @model_validator(mode="after")
    def _stripe_needs_keys(self) -> BillingConfig:
        if self.provider == "stripe":
            missing = [k for k in ("secret_key", "webhook_secret") if not getattr(self.stripe, k)]
            if missing:
                raise ValueError(
                    f"provider stripe needs stripe.{' and stripe.'.join(missing)} "
                    "(from the environment: secret_key: ${STRIPE_SECRET_KEY})"
                )
        return self

    manual_instructions: str = Field(
        default="Contact the operator to pay by bank transfer; your plan starts when the payment is recorded.",
        description="what the manual provider's checkout page tells payers",
    )


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessReportConfig(_Strict):
    """The operator's weekly business report, emailed to ``admin.email`` (README, "Business report")."""

    enabled: bool | None = Field(
        default=None, description="send it; unset: on whenever admin.email is set (false turns it off)"
    )
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = Field(
        default="mon", description="the day it is sent, for the week that ended before it"
    )
    hour: int = Field(default=8, ge=0, le=23, description="the hour (in tz) it is sent at")
    tz: str = Field(default="UTC", description="the time zone of the weeks (Monday to Sunday) and of the hour")
    top: int = Field(default=3, ge=1, le=20, description="top signals shown per automation")

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a time zone; write e.g. UTC, Europe/Paris or America/New_York"
            ) from None
        return value


class AdminConfig(_Strict):
    email: str | None = Field(default=None, description="the operator's address (magic-link login)")
    password_hash: str | None = Field(default=None, description="argon2 hash of the admin password")
    password: str | None = Field(
        default=None, description="the admin password itself, from ${ENV}; hashed at start, never stored"
    )
    business_report: BusinessReportConfig = Field(
        default_factory=BusinessReportConfig, description="the weekly business report emailed to admin.email"
    )

    @model_validator(mode="after")
    def _report_needs_address(self) -> AdminConfig:
        if self.business_report.enabled and not self.email:
            raise ValueError("admin.business_report.enabled is true but admin.email is not set (who gets it?)")
        return self

    @property
    def business_report_on(self) -> bool:
        """Whether the weekly report is sent: on by default once there is an address to send it to."""
        wanted = self.business_report.enabled
        return bool(self.email) and (wanted is None or wanted)


class EmailConfig(_Strict):
    host: str | None = Field(default=None, description="SMTP server; unset: emails are logged, not sent")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP port")
    starttls: bool = Field(default=True, description="upgrade with STARTTLS")
    tls: bool = Field(default=False, description="implicit TLS (port 465)")
    username: str | None = Field(default=None, description="SMTP login")
    password: str | None = Field(default=None, description="SMTP password, from ${ENV}")
    sender: str = Field(default="signalmint <alerts@localhost>", description="From: address")
    inbound_secret: str | None = Field(
        default=None,
        min_length=16,
        description="bearer secret your email provider's bounce/complaint webhook sends to /api/v1/email/events",
    )


class WebConfig(_Strict):
    host: str = Field(default="127.0.0.1", description="address the web server listens on")
    port: int = Field(default=8000, ge=0, le=65535, description="port of the web server (0 picks one)")
    title: str = Field(default="signalmint", description="site name shown in the header")
    public_rate_per_second: float = Field(
        default=5.0, gt=0, le=100_000, description="API requests a second per address without a key"
    )
    public_burst: int = Field(default=20, ge=1, le=1_000_000, description="token-bucket size for those")
    stream_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=3600,
        description="how often a live stream re-reads the store when nothing woke it: signals released by a "
        "plan's delay show within this; on PostgreSQL new signals wake every replica's streams at once "
        "(LISTEN/NOTIFY), and while that connection is down streams poll at least every 0.5 s",
    )
    shared_limits: Literal["auto", "memory", "postgres", "redis"] = Field(
        default="auto",
        description="where rate limits and login throttles are kept: memory (one process), postgres (shared "
        "by every web replica on the same database), redis (at web.redis_url); auto: postgres on "
        "PostgreSQL, memory on SQLite",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="the Redis server for shared_limits: redis (needs the redis extra: "
        "pip install 'signalmint[redis]')",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR networks of your reverse proxies; X-Forwarded-For is believed only "
        "from these (none by default: every throttle keys on the connecting address)",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry: spans, metrics and logs of every request through the "
        "process's global OpenTelemetry providers (set up by you, e.g. opentelemetry-instrument); off by "
        "default, as it checks those providers on every request (about a quarter of an API call's time)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network (write 10.0.0.0/8 or ::1)") from None
        return [entry.strip() for entry in value]


def loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine.

    >>> [loopback_host(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "", "example.com")]
    [True, True, True, True, False, False, False]
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_exposure(settings: Settings) -> str | None:
    """Why these settings must not run in demo mode, or None when they may.

    Demo mode shows working sign-in links (the operator's too) on the page, so it only
    runs where nobody but this machine can reach it: a loopback ``web.host`` and ``base_url``.
    """
    if not settings.demo:
        return None
    base_host = urlsplit(settings.base_url).hostname or ""
    for what, host in (("the address to listen on", settings.web.host), ("base_url", base_host)):
        if not loopback_host(host):
            return (
                "demo mode shows working sign-in links (the operator's too) on its pages, so it serves only "
                f"on a loopback address such as 127.0.0.1, and {what} is {host or 'every interface'!r}"
            )
    return None


class OperatorConfig(_Strict):
    """Where the operator hears about their own automations (staleness raised and recovered)."""

    alerts: list[str] = Field(
        default_factory=list,
        description="channel URLs, as subscribers' endpoints: mailto:..., telegram://CHAT_ID, "
        "webhook+https://..., apprise+...",
    )
    webhook_secret: str | None = Field(
        default=None,
        min_length=16,
        description="Standard Webhooks signing secret (whsec_... or plain text) for webhook alerts, from ${ENV}",
    )

    @field_validator("alerts")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        bad = [
            u
            for u in value
            if not u.startswith(("mailto:", "telegram://", "webhook+https://", "webhook+http://", "apprise+"))
        ]
        if bad:
            raise ValueError(
                f"{bad}: write mailto:ops@example.com, telegram://CHAT_ID, webhook+https://host/path or apprise+..."
            )
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> OperatorConfig:
        if any(u.startswith("webhook+") for u in self.alerts) and not self.webhook_secret:
            raise ValueError("webhook alerts are signed: set operator.webhook_secret (from ${OPERATOR_WEBHOOK_SECRET})")
        return self


class Settings(_Strict):
    """Everything a signalmint process needs, passed in explicitly (never a global)."""

    database: str = Field(
        default="sqlite:///signalmint.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    web: WebConfig = Field(default_factory=WebConfig)
    automations: list[AutomationConfig] = Field(default_factory=list)
    checkpoint_every: Duration = Field(
        default=timedelta(seconds=5),
        description="how often detector state is saved, so a restart resumes where it stopped",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    base_url: str = Field(
        default="http://127.0.0.1:8000", description="public address of the site, used in emailed links"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        description="server secret (from ${ENV}) keying API-key hashes and sessions; unset: one is "
        "generated and kept in the database",
    )
    plans: list[PlanConfig] = Field(default_factory=list, description="what subscribers can buy")
    admin: AdminConfig = Field(default_factory=AdminConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    signup: bool = Field(default=True, description="whether visitors can sign up on the public pages")
    demo: bool = Field(
        default=False,
        description=(
            "demo mode: emailed links are also shown on the page; the request inspector and mail catcher"
            " pages (loopback web.host and base_url only)"
        ),
    )
    operator: OperatorConfig = Field(default_factory=OperatorConfig)

    @model_validator(mode="after")
    def _operator_channels_configured(self) -> Settings:
        alerts = self.operator.alerts
        if any(u.startswith("mailto:") for u in alerts) and not self.email.host:
            raise ValueError("operator.alerts has a mailto: address but email.host is not set (no SMTP server)")
        if any(u.startswith("telegram://") for u in alerts) and not self.telegram.token:
            raise ValueError("operator.alerts has a telegram:// chat but telegram.token is not set (no bot)")
        return self

    @field_validator("automations")
    @classmethod
    def _unique_names(cls, value: list[AutomationConfig]) -> list[AutomationConfig]:
        seen: set[str] = set()
        for automation in value:
            if automation.name in seen:
                raise ValueError(f"two automations are named {automation.name!r}; names must be unique")
            seen.add(automation.name)
        return value

    def plan_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Plans that clash or cover automations that do not exist, and reports naming plans that do
        not, as (key path, message)."""
        names = {a.name for a in self.automations}
        seen: set[str] = set()
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for index, plan in enumerate(self.plans):
            if plan.id in seen:
                problems.append((("plans", index, "id"), f"two plans have the id {plan.id!r}; ids must be unique"))
            seen.add(plan.id)
            if plan.automations != "*":
                unknown = sorted(set(plan.automations) - names)
                if unknown:
                    problems.append(
                        (
                            ("plans", index, "automations"),
                            f"plan {plan.id!r} covers unknown automation(s) {unknown}",
                        )
                    )
        for index, automation in enumerate(self.automations):
            for number, report in enumerate(automation.reports):
                unknown = sorted(set(report.audience.plans) - seen)
                if unknown:
                    where = ("automations", index, "reports", number, "audience", "plans")
                    problems.append((where, f"report {report.name!r} names unknown plan(s) {unknown}"))
        return problems

    def current_plans(self) -> list[Plan]:
        """The configured plans as records, version 0 (the store assigns real versions)."""
        return [p.to_plan(0) for p in self.plans]

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("use one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    def automation(self, name: str) -> AutomationConfig:
        for automation in self.automations:
            if automation.name == name:
                return automation
        raise KeyError(name)


# --- locating keys in the YAML text -------------------------------------------------------

Path_ = tuple[str | int, ...]


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(path: Path_, lines: Mapping[Path_, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(data: Any, path: Path_, env: Mapping[str, str], fail: Any) -> Any:
    if isinstance(data, dict):
        return {k: _interpolate(v, (*path, k), env, fail) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, (*path, i), env, fail) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            fail(
                path,
                f"environment variable {name} is not set",
                f"export {name}=... or write ${{{name}:-default}}",
            )
            return ""

        return _ENV.sub(replace, data)
    return data


def _hint(error: Mapping[str, Any], allowed: list[str]) -> str | None:
    kind = error["type"]
    last = error["loc"][-1] if error["loc"] else ""
    if kind == "missing":
        return f"add `{last}: ...`"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(last), allowed, n=1)
        if close:
            return f"did you mean `{close[0]}`?"
        return "remove it; known keys here: " + ", ".join(allowed) if allowed else "remove it"
    if kind in {"int_parsing", "int_type", "float_parsing", "float_type"}:
        return f"write a number, e.g. `{last}: 3`"
    if kind in {"bool_parsing", "bool_type"}:
        return f"write `{last}: true` or `{last}: false`"
    if kind == "string_pattern_mismatch":
        return "use lowercase letters, digits, - and _ (e.g. my-automation)"
    return None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at ``loc`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        args = getattr(annotation, "__args__", ())
        current = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _raise_validation(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: Path_,
    file: str,
    lines: Mapping[Path_, int],
) -> None:
    problems: list[ConfigError] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = (*prefix, *loc)
        message = error["msg"]
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        if error["type"] != "missing" and "input" in error and not isinstance(error["input"], dict | list):
            message += f" (got {error['input']!r})"
        problems.append(
            ConfigError(
                message,
                file=file,
                line=_line_of(path, lines),
                key=_dotted(path),
                hint=_hint(error, _fields_at(model, loc)),
            )
        )
    first = problems[0]
    if len(problems) > 1:
        rest = "\n".join(str(p) for p in problems[1:])
        first.hint = ((first.hint + "\n") if first.hint else "") + f"and {len(problems) - 1} more:\n{rest}"
    raise first


def parse_settings(
    text: str, *, file: str = "<config>", registry: Registry, env: Mapping[str, str] | None = None
) -> Settings:
    """Validate a YAML document into :class:`Settings`, plugins' options included."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(
            f"this is not valid YAML: {exc.problem or exc}",
            file=file,
            line=mark.line + 1 if mark else None,
            hint="check the indentation and that every `key: value` has a space after the colon",
        ) from None
    if data is None:
        data = {}
    lines: dict[Path_, int] = {}
    if node is not None:
        _lines(node, (), lines)
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of `key: value` lines", file=file, line=1)

    def fail(path: Path_, message: str, hint: str | None = None) -> None:
        raise ConfigError(message, file=file, line=_line_of(path, lines), key=_dotted(path), hint=hint)

    data = _interpolate(data, (), env, fail)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, Settings, (), file, lines)
        raise  # unreachable: _raise_validation always raises
    for where, message in settings.plan_problems():
        if "reports" in where:
            fail(where, message, "name plan ids listed under `plans:`")
        fail(where, message, 'name automations listed under `automations:`, or write "*" for all')
    exposure = demo_exposure(settings)
    if exposure:
        fail(("demo",), exposure, "set `demo: false` to serve others; demo mode is for a tour on this machine")
    for index, automation in enumerate(settings.automations):
        built: dict[str, tuple[Any, BaseModel]] = {}
        for what, plugin in (("source", automation.source), ("detector", automation.detector)):
            path: Path_ = ("automations", index, what)
            try:
                cls = registry.get(what, plugin.kind)
            except ConfigError as exc:
                fail((*path, "kind"), exc.message, exc.hint)
                raise
            options = plugin.options
            known = sorted(cls.Options.model_fields)
            renamed = getattr(cls.Options, "renamed", {})  # old option -> (new name, what to write)
            for key in options:
                if key in renamed:
                    fail((*path, key), f"{what}s.{plugin.kind}: `{key}` was renamed `{renamed[key][0]}`",
                         renamed[key][1])  # fmt: skip
                if key not in cls.Options.model_fields:
                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f"did you mean `{close[0]}`?" if close else "known options: " + ", ".join(known)
                    fail((*path, key), f"{plugin.kind} has no option {key!r}", hint)
            try:
                built[what] = (cls, cls.Options.model_validate(options))
            except ValidationError as exc:
                _raise_validation(exc, cls.Options, path, file, lines)
        _check_columns(automation, built, ("automations", index), fail)
    return settings


def _check_columns(
    automation: AutomationConfig,
    built: Mapping[str, tuple[Any, BaseModel]],
    path: Path_,
    fail: Any,
) -> None:
    """Refuse a detector that needs a column its source does not give.

    The error points at the detector option naming the column (``column: price``), or at
    the detector's ``kind`` when the need is fixed."""
    try:
        given = declared(*built["source"])
        needed = declared(*built["detector"])
    except ConfigError as exc:
        fail((*path, "detector", "kind"), exc.message, exc.hint)
        raise
    options = automation.detector.options
    for name, kind in needed.items():
        problem = missing_columns(given, {name: kind})
        if not problem:
            continue
        key = next(
            (k for k, v in options.items() if v == name or (isinstance(v, list | tuple) and name in v)),
            "kind",
        )
        fail(
            (*path, "detector", key),
            f"detector {automation.detector.kind} needs {problem[0]} from source {automation.source.kind}",
            "name a column the source gives, or pick a source that gives this one",
        )


def load_settings(path: str | Path, *, registry: Registry, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; a missing or unreadable file is a ConfigError too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(path), hint="create one with `signalmint init`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", file=str(path)) from None
    return parse_settings(text, file=str(path), registry=registry, env=env)


def delivery_channels(settings: Settings) -> frozenset[str]:
    """The channel kinds this installation can send: those whose ``requires`` setting is set.

    Email needs SMTP (``email.host``), Telegram a bot token (``telegram.token``); a channel
    that requires nothing (webhook, Apprise, most plugins) is always there.
    """
    kinds = set()
    for kind in channel_kinds():
        needed = channel_class(kind).requires
        value: Any = settings
        for part in (needed or "").split(".") if needed else ():
            value = getattr(value, part, None)
        if value:
            kinds.add(kind)
    return frozenset(kinds)
