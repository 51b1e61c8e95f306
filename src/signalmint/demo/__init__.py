"""The demo: bundled data and accounts (:mod:`.seed`), a local shop and news feed to read
(:mod:`.shop`) and a local SMTP server whose mail the web app shows (:mod:`.mailcatcher`).
"""

from __future__ import annotations

from .mailcatcher import Caught, MailCatcher, Part
from .seed import DemoAccount, demo_plans, demo_settings, seed_demo
from .shop import KEYWORDS, LocalShop, Product

__all__ = [
    "KEYWORDS",
    "Caught",
    "DemoAccount",
    "LocalShop",
    "MailCatcher",
    "Part",
    "Product",
    "demo_plans",
    "demo_settings",
    "seed_demo",
]
