"""The per-host politeness gate: requests to one host are spaced, whichever source sends them.

Every source that reads the network (``rss``, ``web_page``, ``http_json``, ``evm``) asks the
gate for a turn before each request. The gate is per *process*, not per source: three
automations reading one shop, one API or one RPC node space their requests as one client
would, because that is what the other side sees. A host is its scheme, name and port
(``https://api.github.com:443``): two local servers on two ports are two hosts.

Each request reserves its slot before sleeping, so concurrent callers queue rather than
all waking at once. Two consecutive requests to a host are at least the larger of their two
sources' ``host_interval`` apart: a source asking for more care than its neighbour gets it.

Sources on the real clock share :data:`HOSTS`; a source built with a virtual clock (tests)
gets a gate of its own on that clock (:func:`gate_for`), and a test that wants several
virtual-clock sources to share one passes the same :class:`HostGate` to each.

>>> now = [0.0]
>>> waits = []
>>> async def sleep(seconds):
...     waits.append(seconds)
...     now[0] += seconds
>>> gate = HostGate(clock=lambda: now[0], sleep=sleep)
>>> async def three():
...     await gate.turn("https://api.example.com:443", 1.0)
...     await gate.turn("https://api.example.com:443", 0.5)   # waits 1.0, the stricter interval
...     await gate.turn("https://other.example.com:443", 1.0)  # another host: no wait
>>> import asyncio; asyncio.run(three()); waits
[1.0]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import yarl

__all__ = ["HOSTS", "HostGate", "gate_for", "host_of"]


def host_of(url: str | yarl.URL) -> str:
    """The gate's key for a URL: ``scheme://host:port``, lower case.

    >>> host_of("https://API.example.com/v1?q=1"), host_of("http://127.0.0.1:8545")
    ('https://api.example.com:443', 'http://127.0.0.1:8545')
    """
    parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
    return f"{(parsed.scheme or '').lower()}://{(parsed.host or '').lower()}:{parsed.port}"


@dataclass
class HostGate:
    """Spaces requests per host (see the module doc)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: host -> (time of its last reserved slot, the interval its sender asked for)
    _last: dict[str, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)

    async def turn(self, host: str, interval: float) -> None:
        """Wait for ``host``'s next slot, at least ``interval`` seconds after its previous one."""
        now = self.clock()
        last = self._last.get(host)
        at = now if last is None else max(now, last[0] + max(last[1], interval))
        self._last[host] = (at, interval)
        if at > now:
            await self.sleep(at - now)


#: The process's gate: every source on the real clock shares it.
HOSTS = HostGate()


def gate_for(clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]) -> HostGate:
    """:data:`HOSTS` for a source on the real clock; a gate of its own on a virtual one."""
    if clock in (time.monotonic, time.time) and sleep is asyncio.sleep:
        return HOSTS
    return HostGate(clock=clock, sleep=sleep)
