"""The SSRF guard: every user-supplied URL is vetted at registration and again at send time.

Three layers, each cheap:

- :func:`check_url` (sync, no DNS) parses the URL with the same parser aiohttp uses (yarl),
  so the host we vet is the host the client will dial. It refuses userinfo, odd ports, plain
  ``http`` (unless ``allow_loopback``), IP literals in every spelling browsers and
  ``inet_aton`` accept (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``,
  ``::ffff:7f00:1``, zone ids...) that land in a non-public range, any non-canonical numeric
  spelling at all (parsers disagree on them), and names such as ``localhost``,
  ``*.localhost``, ``*.internal`` (``metadata.google.internal``) or single-label names that
  the resolver would complete with the local search domain.
- :func:`resolve_safe` resolves a name and refuses it if *any* answer is not public, so a
  name answering public first and private second is refused.
- Dialling only vetted addresses closes the DNS-rebinding hole. The webhook client
  (:mod:`signalmint.delivery.http1`) calls :func:`resolve_safe` and connects the socket to
  the address it returned, so nothing resolves the name a second time between the check and
  the connect; the ``Host`` header, TLS SNI and certificate verification use the name.
  :class:`~signalmint.net.vetted.VettedResolver` does the same for an aiohttp connector
  (``aiohttp.abc.AbstractResolver``), for any aiohttp-based client.

The guard raises :class:`UnsafeTarget`, a permanent :class:`~signalmint.errors.DeliveryError`.
``allow_loopback`` (an operator setting, for local testing only) lets loopback addresses,
``localhost`` and plain ``http`` through. ``own`` (demo mode only) lets exactly one more
kind of URL through: the demo's own request inspector, ``{own}{token}`` where ``own`` is
``http://HOST:PORT/demo/inspect/`` and the token is letters, digits, ``-`` and ``_`` (no
other path, no query, no userinfo). Nothing else is ever allowed.

When a URL is wrong in several ways, the address is named first: ``http://10.0.0.8/``
is refused as a private address at once, not first for its scheme and then, once
the subscriber has typed ``https``, for its address.

>>> check_url("https://hooks.example.com/in").host
'hooks.example.com'
>>> check_url("https://0x7f.1/")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
signalmint.net.ssrf.UnsafeTarget: ...: 0x7f.1 is a non-canonical spelling of 127.0.0.1, a loopback address
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import yarl

from signalmint.errors import DeliveryError

__all__ = [
    "BAD_PORTS",
    "ParsedTarget",
    "Resolver",
    "UnsafeTarget",
    "check_host",
    "check_url",
    "classify_ip",
    "own_origin",
    "resolve_safe",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""An async callable answering a host name with its IP addresses (as strings)."""


class UnsafeTarget(DeliveryError):
    """A URL, host or resolved address the SSRF guard refuses. Always permanent."""

    def __init__(self, message: str, *, target: str = "", reason: str = "") -> None:
        super().__init__(message, permanent=True)
        self.target = target
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedTarget:
    """A URL that passed :func:`check_url`.

    ``host`` is normalized (lowercase, IDNA-encoded, no trailing dot); ``ip`` is set when the
    host is an IP literal.
    """

    url: str
    scheme: str
    host: str
    port: int
    ip: str | None = None


# -- addresses ---------------------------------------------------------------------------

_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network
_LOOPBACK = "a loopback address"
_METADATA = "a cloud metadata address"

# Order matters: the first match names the reason.
_V4_BLOCKED: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_N4("127.0.0.0/8"), _LOOPBACK),
    (_N4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_N4("10.0.0.0/8"), "a private address"),
    (_N4("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (_N4("169.254.169.254/32"), _METADATA),
    (_N4("169.254.0.0/16"), "a link-local address"),
    (_N4("172.16.0.0/12"), "a private address"),
    (_N4("192.0.0.0/24"), "an IETF protocol assignment address"),
    (_N4("192.0.2.0/24"), "a documentation address"),
    (_N4("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (_N4("192.168.0.0/16"), "a private address"),
    (_N4("198.18.0.0/15"), "a benchmarking address"),
    (_N4("198.51.100.0/24"), "a documentation address"),
    (_N4("203.0.113.0/24"), "a documentation address"),
    (_N4("168.63.129.16/32"), _METADATA),  # Azure's platform endpoint, reachable from every VM
    (_N4("224.0.0.0/4"), "a multicast address"),
    (_N4("255.255.255.255/32"), "the broadcast address"),
    (_N4("240.0.0.0/4"), "a reserved address"),
)

_V6_BLOCKED: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_N6("::1/128"), _LOOPBACK),
    (_N6("::/128"), "an unspecified address"),
    (_N6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_N6("100::/64"), "a discard-only address"),
    (_N6("2001::/32"), "a Teredo tunnel address"),
    (_N6("2001:db8::/32"), "a documentation address"),
    (_N6("2001::/23"), "an IETF protocol assignment address"),
    (_N6("3fff::/20"), "a documentation address"),
    (_N6("5f00::/16"), "a segment-routing address"),
    (_N6("fd00:ec2::254/128"), _METADATA),  # AWS IMDS over IPv6
    (_N6("fc00::/7"), "a unique-local (private) address"),
    (_N6("fe80::/10"), "a link-local address"),
    (_N6("fec0::/10"), "a site-local address"),
    (_N6("ff00::/8"), "a multicast address"),
)
_V6_GLOBAL_UNICAST: Final = _N6("2000::/3")
_V6_MAPPED: Final = _N6("::ffff:0:0/96")
_V6_TRANSLATED: Final = _N6("::ffff:0:0:0/96")
_V6_COMPATIBLE: Final = _N6("::/96")
_V6_NAT64: Final = _N6("64:ff9b::/96")
_V6_6TO4: Final = _N6("2002::/16")


def classify_ip(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be dialled (``"a private address"``...), or None when it is public.

    IPv6 forms that embed an IPv4 address (mapped, translated, compatible, NAT64, 6to4,
    Teredo) are judged by the address they carry.

    >>> classify_ip(ipaddress.ip_address("::ffff:10.0.0.1"))
    'IPv4-mapped 10.0.0.1, a private address'
    >>> classify_ip(ipaddress.ip_address("8.8.8.8")) is None
    True
    """
    if isinstance(ip, ipaddress.IPv4Address):
        for net, reason in _V4_BLOCKED:
            if ip in net:
                return None if (allow_loopback and reason is _LOOPBACK) else reason
        return None
    if ip.scope_id:
        unscoped = ipaddress.IPv6Address(int(ip))
        return classify_ip(unscoped, allow_loopback=allow_loopback) or "a scoped IPv6 address (zone id)"
    for embedding, label in (
        (_V6_MAPPED, "IPv4-mapped"),
        (_V6_TRANSLATED, "IPv4-translated"),
        (_V6_NAT64, "NAT64"),
    ):
        if ip in embedding:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            why = classify_ip(inner, allow_loopback=allow_loopback)
            return None if why is None else f"{label} {inner}, {why}"
    if ip in _V6_COMPATIBLE and ip not in _N6("::/127"):
        return f"an IPv4-compatible address (deprecated) embedding {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)}"
    if ip in _V6_6TO4 and ip.sixtofour is not None:
        why = classify_ip(ip.sixtofour, allow_loopback=allow_loopback)
        return None if why is None else f"6to4 embedding {ip.sixtofour}, {why}"
    if ip.teredo is not None:
        server, client = ip.teredo
        return f"a Teredo tunnel address (server {server}, client {client})"
    for net6, reason in _V6_BLOCKED:
        if ip in net6:
            return None if (allow_loopback and reason is _LOOPBACK) else reason
    if ip not in _V6_GLOBAL_UNICAST:
        return "not a global unicast address"
    return None


# -- hosts -------------------------------------------------------------------------------

_HEX = re.compile(r"0x[0-9a-f]*")
_OCT = re.compile(r"0[0-7]+")
_DEC = re.compile(r"[0-9]+")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

_LOOPBACK_NAMES: Final = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_BLOCKED_SUFFIXES: Final[tuple[tuple[str, str], ...]] = (
    (".localhost", "a loopback name"),
    (".internal", "an internal name (cloud metadata and private zones)"),
    (".local", "a multicast DNS (.local) name"),
    (".localdomain", "a local name"),
    (".home.arpa", "a home network name"),
    (".arpa", "a reverse-lookup or infrastructure name"),
    (".onion", "an onion name"),
    (".test", "a reserved test name"),
    (".invalid", "a reserved invalid name"),
)


def _ipv4_number(part: str) -> int | None:
    """One dotted part the way browsers and inet_aton read it (hex, octal or decimal)."""
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if part.startswith("0") and len(part) > 1:
        return int(part, 8) if _OCT.fullmatch(part) else None
    if _DEC.fullmatch(part):
        return int(part)
    return None


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | bool | None:
    """The IPv4 address ``host`` spells (WHATWG URL host parsing), None if it is a name, False if malformed."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if not (_DEC.fullmatch(last) or _HEX.fullmatch(last)):
        return None  # does not end in a number: a domain name
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        return False
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return False
    address = values[-1]
    for i, n in enumerate(values[:-1]):
        address += n << (8 * (3 - i))
    return ipaddress.IPv4Address(address)


def _refuse(subject: str, target: str, reason: str) -> UnsafeTarget:
    return UnsafeTarget(f"{subject}: {target} is {reason}", target=target, reason=reason)


def _ip_literal(host: str, subject: str) -> IPAddress | None:
    """The address an IP-literal host denotes, None for a name; refuses malformed literals."""
    if ":" in host:
        text = host.strip("[]").replace("%25", "%")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise _refuse(subject, host, "not a valid IPv6 address") from None
    parsed = _parse_ipv4(host)
    if parsed is False:
        raise _refuse(subject, host, "neither a host name nor a valid IPv4 address")
    return parsed if isinstance(parsed, ipaddress.IPv4Address) else None


def _vet_host(host: str, allow_loopback: bool, subject: str) -> tuple[str, IPAddress | None]:
    name = host.strip().lower()
    if not name:
        raise _refuse(subject, "(empty host)", "not a host")
    ip = _ip_literal(name, subject)
    if ip is not None:
        why = classify_ip(ip, allow_loopback=allow_loopback)
        if isinstance(ip, ipaddress.IPv4Address) and name != str(ip):
            detail = f"a non-canonical spelling of {ip}"
            raise _refuse(subject, host, f"{detail}, {why}" if why else f"{detail}: write {ip}")
        if why is not None:
            raise _refuse(subject, host, why)
        return str(ip), ip
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _refuse(subject, host, "not a valid host name")
    if name in _LOOPBACK_NAMES:
        if allow_loopback:
            return name, None
        raise _refuse(subject, host, "a loopback name")
    for suffix, reason in _BLOCKED_SUFFIXES:
        if name.endswith(suffix) or name == suffix[1:]:
            if allow_loopback and suffix == ".localhost":
                return name, None
            raise _refuse(subject, host, reason)
    if len(labels) == 1:
        raise _refuse(subject, host, "a single-label name (resolved through the local search domain)")
    return name, None


def check_host(host: str, *, allow_loopback: bool = False, subject: str | None = None) -> str:
    """Vet a host (name or IP literal) without DNS; return it normalized.

    ``subject`` names what is being checked in the error (the URL, by default the host).

    >>> check_host("Hooks.Example.COM.")
    'hooks.example.com'
    >>> check_host("metadata.google.internal")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    signalmint.net.ssrf.UnsafeTarget: ...: metadata.google.internal is an internal name (cloud metadata...)
    """
    return _vet_host(host, allow_loopback, subject or host)[0]


# -- URLs --------------------------------------------------------------------------------

# Ports browsers refuse to fetch (the Fetch standard's "bad ports"): mail, shell, DNS, IRC...
BAD_PORTS: Final = frozenset(
    {0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103}
    | {104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513}
    | {514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720}
    | {1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080}
)


def check_url(url: str, *, allow_loopback: bool = False, own: str | None = None) -> ParsedTarget:
    """Vet a user-supplied HTTP(S) URL without DNS; raise :class:`UnsafeTarget` if it is refused.

    A pure function of its arguments (no DNS: the dialled address is vetted separately), so
    answers are remembered: the worker checks every endpoint when it builds its channel and
    again when it sends.

    >>> check_url("https://hooks.example.com:8443/in?x=1").port
    8443
    >>> check_url("https://[::ffff:127.0.0.1]/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    signalmint.net.ssrf.UnsafeTarget: ...: ::ffff:7f00:1 is IPv4-mapped 127.0.0.1, a loopback address
    >>> check_url("http://127.0.0.1:8000/demo/inspect/a1B2-c3d4", own="http://127.0.0.1:8000/demo/inspect/").port
    8000
    >>> check_url("http://127.0.0.1:8000/admin", own="http://127.0.0.1:8000/demo/inspect/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    signalmint.net.ssrf.UnsafeTarget: ...: 127.0.0.1 is a loopback address (and only https URLs are allowed)
    """
    return _check_url(url, allow_loopback, own)


_OWN_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")


def own_origin(own: str) -> tuple[str, str, int]:
    """The (scheme, host, port) of an ``own`` prefix, as :class:`ParsedTarget` spells them.

    >>> own_origin("http://127.0.0.1:8000/demo/inspect/")
    ('http', '127.0.0.1', 8000)
    """
    parsed = yarl.URL(own)
    return parsed.scheme.lower(), (parsed.raw_host or "").lower(), parsed.port or 0


@functools.lru_cache(maxsize=50_000)
def _check_url(url: str, allow_loopback: bool, own: str | None = None) -> ParsedTarget:
    if own and url.startswith(own) and _OWN_TOKEN.fullmatch(url[len(own) :]):
        own_scheme, own_host, own_port = own_origin(own)
        literal = _ip_literal(own_host, url) if own_host else None
        own_ip = None if literal is None else str(literal)
        return ParsedTarget(url=url, scheme=own_scheme, host=own_host, port=own_port, ip=own_ip)
    try:
        parsed = yarl.URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise UnsafeTarget(f"{url}: not a valid URL ({exc})", target=url, reason="invalid URL") from None
    scheme = parsed.scheme.lower()
    allowed = ("https", "http") if allow_loopback else ("https",)
    if scheme not in ("https", "http"):
        why = "only https URLs are allowed"
        raise UnsafeTarget(f"{url}: {why}", target=url, reason=why)
    if not parsed.raw_host:
        raise UnsafeTarget(f"{url}: the URL has no host", target=url, reason="no host")
    try:  # the address first: a private one is refused whatever the scheme (one answer, not two in turn)
        host, ip = _vet_host(parsed.raw_host, allow_loopback, url)
    except UnsafeTarget as exc:
        if scheme in allowed:
            raise
        also = " (and only https URLs are allowed)"
        raise UnsafeTarget(f"{exc}{also}", target=exc.target, reason=exc.reason) from None
    if scheme not in allowed:
        why = "only https URLs are allowed (http only for local testing)"
        raise UnsafeTarget(f"{url}: {why}", target=url, reason=why)
    if parsed.raw_user is not None or parsed.raw_password is not None:
        why = "credentials in the URL (user:password@) are not allowed"
        raise UnsafeTarget(f"{url}: {why}", target=url, reason=why)
    if port is None or port in BAD_PORTS or not 0 < port < 65536:
        why = f"port {port} is not allowed"
        raise UnsafeTarget(f"{url}: {why}", target=url, reason=why)
    return ParsedTarget(url=url, scheme=scheme, host=host, port=port, ip=None if ip is None else str(ip))


# -- resolution --------------------------------------------------------------------------


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc.strerror or exc}", permanent=False) from None
    return [str(info[4][0]) for info in infos]


async def resolve_safe(
    host: str, port: int, *, resolver: Resolver | None = None, allow_loopback: bool = False
) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing it if ANY answer is not public.

    ``resolver`` answers a name with IP strings (default: the system's getaddrinfo). An
    IP-literal host is vetted without resolving. A name with no answer raises a retryable
    :class:`~signalmint.errors.DeliveryError`.
    """
    name, ip_literal = _vet_host(host, allow_loopback, host)
    if ip_literal is not None:
        return [name]
    answers = list(await resolver(name)) if resolver is not None else await _system_resolve(name, port)
    vetted: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(str(answer).split("%", 1)[0])
        except ValueError:
            raise _refuse(name, repr(answer), "not an IP address (from the resolver)") from None
        why = classify_ip(ip, allow_loopback=allow_loopback)
        if why is not None:
            raise UnsafeTarget(f"{name} resolves to {ip}, {why}", target=name, reason=why)
        if str(ip) not in vetted:
            vetted.append(str(ip))
    if not vetted:
        raise DeliveryError(f"{name} has no addresses", permanent=False)
    return vetted
