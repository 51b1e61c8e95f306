"""The SSRF guard for aiohttp clients, in a module of its own: only the sources' fetcher
(:mod:`signalmint.sources.fetch`) dials with aiohttp, so nothing else loads it for this class."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from ..errors import DeliveryError
from .ssrf import Resolver, resolve_safe

__all__ = ["VettedResolver"]


class VettedResolver(AbstractResolver):
    """An aiohttp resolver that hands the connector only addresses :func:`resolve_safe` vetted.

    The connector dials what this returns, so a name cannot answer public to the check and
    private to the connection (DNS rebinding). Refusals surface from ``session.request`` as
    :class:`UnsafeTarget`.
    """

    def __init__(self, *, resolver: Resolver | None = None, allow_loopback: bool = False) -> None:
        self.resolver = resolver
        self.allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ips = await resolve_safe(host, port, resolver=self.resolver, allow_loopback=self.allow_loopback)
        results: list[ResolveResult] = []
        for ip in ips:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if family in (socket.AF_INET, socket.AF_INET6) and fam != family:
                continue
            results.append(
                {"hostname": host, "host": ip, "port": port, "family": fam, "proto": 0, "flags": socket.AI_NUMERICHOST}
            )
        if not results:
            raise DeliveryError(f"{host} has no address of the requested family", permanent=False)
        return results

    async def close(self) -> None:
        return None
