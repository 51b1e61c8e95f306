"""Access: plans, subscriptions and entitlements, as pure functions over records.

:mod:`.entitlements` decides for one subscription (who, when, which fields, quotas, budgets,
quiet hours); :mod:`.audience` decides one signal for many subscriptions at once, with the
same answers.
"""

from __future__ import annotations

from .audience import Audience, Decisions, Row
from .entitlements import (
    MASK_ALL,
    PUBLIC_CHANNELS,
    Grant,
    QuotaDecision,
    Tier,
    allowed_keys,
    budget_allows,
    deliver_at,
    grants,
    is_entitled,
    key_allowed,
    mask,
    masked_json,
    month_start,
    public_grant,
    quiet_until,
    quota_decision,
    visible_payload,
)

__all__ = [
    "MASK_ALL",
    "PUBLIC_CHANNELS",
    "Audience",
    "Decisions",
    "Grant",
    "QuotaDecision",
    "Row",
    "Tier",
    "allowed_keys",
    "budget_allows",
    "deliver_at",
    "grants",
    "is_entitled",
    "key_allowed",
    "mask",
    "masked_json",
    "month_start",
    "public_grant",
    "quiet_until",
    "quota_decision",
    "visible_payload",
]
