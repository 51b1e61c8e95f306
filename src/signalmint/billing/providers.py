"""Picking the payment provider the settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .local import LocalProvider
from .manual import ManualProvider
from .stripe_provider import StripeProvider

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Database
    from .core import PaymentProvider

__all__ = ["make_provider"]


def make_provider(settings: Settings, db: Database) -> PaymentProvider:
    """The provider ``settings.billing.provider`` names."""
    name = settings.billing.provider
    if name == "stripe":
        return StripeProvider(settings, db)  # type: ignore[no-any-return, unused-ignore]
    if name == "manual":
        return ManualProvider(settings, db)

    return LocalProvider(settings, db)
