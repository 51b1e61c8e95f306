"""Outbound network safety shared by sources and channels: the SSRF guard (:mod:`.ssrf`) and its
twin in the socket layer for clients that dial by themselves (:mod:`.dial_guard`).
"""

from __future__ import annotations

from .dial_guard import DialScope, Refused, guarded, vet_address
from .ssrf import (
    BAD_PORTS,
    ParsedTarget,
    Resolver,
    UnsafeTarget,
    VettedResolver,
    check_host,
    check_url,
    classify_ip,
    own_origin,
    resolve_safe,
)

__all__ = [
    "BAD_PORTS",
    "DialScope",
    "ParsedTarget",
    "Refused",
    "Resolver",
    "UnsafeTarget",
    "VettedResolver",
    "check_host",
    "check_url",
    "classify_ip",
    "guarded",
    "own_origin",
    "resolve_safe",
    "vet_address",
]
