"""Records -> JSON shapes of the public API (also used by the live feed)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ..delivery.shapes import signal_json
from ..records import Automation, Plan
from .params import parse_id

__all__ = ["AutomationOut", "SignalOut", "decode_cursor", "encode_cursor", "signal_json"]


class SignalOut(BaseModel):
    id: int
    automation: str
    seq: int = Field(description="position in the automation's hash chain, from 1")
    key: str = Field(description="the series the signal is about, e.g. a symbol")
    time: datetime = Field(description="time of the bar that triggered it (UTC)")
    kind: str
    score: float | None = Field(description="null when your plan masks it")
    payload: dict[str, Any] = Field(description="the numbers behind the signal (fields your plan masks are left out)")
    hash: str | None = Field(
        description="the chain hash; for scheme 1 (old signals) null when your plan masks any field"
    )
    prev_hash: str | None
    scheme: int = Field(default=1, description="hash scheme: 2 commits to the numbers with a salted commitment")
    prev_scheme: int = Field(default=0, description="the previous signal's scheme (0: this is the first)")
    commitment: str | None = Field(default=None, description="scheme 2: H(salt, score, payload), public at once")
    salt: str | None = Field(default=None, description="scheme 2: shown with the numbers, to check the commitment")
    url: str
    masked: list[str] = Field(default_factory=list, description="fields your plan hides")
    late: bool = Field(
        default=False,
        description="its bar was older than the automation's max_signal_age when it was committed: recorded, "
        "never sent as an alert (present only when true; part of the hash when true)",
    )


class AutomationOut(BaseModel):
    name: str
    title: str
    description: str
    source: str
    detector: str
    detector_options: dict[str, Any]
    url: str


class SignalPage(BaseModel):
    items: list[SignalOut]
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next (older) page")


class PlanOut(BaseModel):
    id: str
    version: int
    name: str
    description: str
    automations: list[str]
    price: int = Field(description="in minor units of currency (2900 = 29.00)")
    currency: str
    interval: str
    trial_days: int
    delay_seconds: float
    keys: list[str] | None
    watchlist: int | None
    channels: list[str]
    masked_fields: list[str]
    alerts_per_day: int | None
    api_quota: int | None
    overage_price: int
    rate_per_second: float
    burst: int


class PlanPage(BaseModel):
    items: list[PlanOut]
    next_cursor: str | None = None


class AutomationPage(BaseModel):
    items: list[AutomationOut]
    next_cursor: str | None = None


def automation_json(automation: Automation) -> dict[str, Any]:
    return {
        "name": automation.name,
        "title": automation.title,
        "description": automation.description,
        "source": automation.source_kind,
        "detector": automation.detector_kind,
        "detector_options": dict(automation.detector_options),
        "url": f"/automations/{automation.name}",
    }


def encode_cursor(signal_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{signal_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor stands for; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # binascii.Error, a str that is not ASCII, or bytes that are not UTF-8
        raise ValueError("not a cursor returned by this API") from None
    prefix, _, number = raw.partition(":")
    if prefix != "id":
        raise ValueError("not a cursor returned by this API")
    try:
        return parse_id(number)
    except ValueError:
        raise ValueError("not a cursor returned by this API") from None


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "version": plan.version,
        "name": plan.name,
        "description": plan.description,
        "automations": list(plan.automations),
        "price": plan.price,
        "currency": plan.currency,
        "interval": plan.interval,
        "trial_days": plan.trial_days,
        "delay_seconds": plan.delay.total_seconds(),
        "keys": list(plan.keys) if plan.keys is not None else None,
        "watchlist": plan.watchlist,
        "channels": sorted(plan.channels),
        "masked_fields": sorted(plan.masked_fields),
        "alerts_per_day": plan.alerts_per_day,
        "api_quota": plan.api_quota,
        "overage_price": plan.overage_price,
        "rate_per_second": plan.rate_per_second,
        "burst": plan.burst,
    }
