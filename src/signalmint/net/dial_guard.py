"""The SSRF guard inside the socket layer, for clients that resolve and dial by themselves.

The webhook client dials the address the guard vetted (:mod:`signalmint.delivery.http1`).
Apprise's plugins cannot be made to: they connect through ``requests`` (urllib3) and
``smtplib`` from worker threads, resolve names themselves, and follow redirects. So the check
moves to where every connection passes: :func:`guarded` opens a scope in which every address a
socket connects or sends to is vetted with :func:`~signalmint.net.ssrf.classify_ip`, the
same rule as webhooks, *after* name resolution, on the address actually used.

How: one process-wide audit hook (PEP 578, :func:`sys.addaudithook`; installed on first use,
never removed). CPython raises the ``socket.connect``, ``socket.sendto`` and ``socket.sendmsg``
events from the socket module's C code with the address about to be used, whatever library
made the socket, and an exception raised by the hook aborts the call before any packet leaves.
Outside a scope the hook returns after one set lookup and one context-variable read. Inside,
the address must be a numeric IPv4 or IPv6 address the guard accepts: a loopback, private,
link-local, metadata... address, a name the C layer would resolve by itself, or a Unix socket
fails with :class:`Refused`, a :class:`PermissionError` (``EACCES``, what a firewall gives), so
clients close the socket and report a connection error as they would for any other; the
:class:`~signalmint.net.ssrf.UnsafeTarget` it carries is kept on the scope. A DNS answer that changed since the
last check (rebinding), a redirect, an SMTP host from a query parameter: all meet the same check.

The scope lives in a :class:`contextvars.ContextVar`, so it is per task and per thread, and
follows the work where the context goes: asyncio tasks copy it, and Apprise hands a copy to each
worker thread it sends from (``contextvars.copy_context``). A thread started without the
context is outside the scope, which is why Apprise plugins are allowed by reviewed scheme
(:mod:`signalmint.delivery.channels.apprise`). The caller raises the scope's first refusal
(:meth:`DialScope.raise_refusal`) whatever the library made of the connection error.

>>> vet_address(socket.AF_INET, ("93.184.215.14", 443))
'93.184.215.14'
>>> vet_address(socket.AF_INET, ("127.0.0.1", 25))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
signalmint.net.ssrf.UnsafeTarget: refused to connect to 127.0.0.1 (port 25): a loopback address
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from .ssrf import UnsafeTarget, classify_ip

__all__ = ["DialScope", "Refused", "guarded", "vet_address"]

_EVENTS: Final = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_INET: Final = (socket.AF_INET, socket.AF_INET6)


class Refused(PermissionError):
    """A connection the guard refused inside a scope; ``unsafe`` says why."""

    def __init__(self, unsafe: UnsafeTarget) -> None:
        super().__init__(errno.EACCES, str(unsafe))
        self.unsafe = unsafe


@dataclass
class DialScope:
    """One guarded scope: its policy, and what the guard refused inside it."""

    allow_loopback: bool = False
    refused: list[UnsafeTarget] = field(default_factory=list)

    def raise_refusal(self) -> None:
        """Raise the first refusal, if any (libraries may have caught and logged it)."""
        if self.refused:
            raise self.refused[0]


_SCOPE: contextvars.ContextVar[DialScope | None] = contextvars.ContextVar("signalmint_dial_scope", default=None)
_install_lock = threading.Lock()
_installed = False


def vet_address(family: int, address: Any, *, allow_loopback: bool = False) -> str:
    """The IP a socket of ``family`` is about to reach at ``address``, or :class:`UnsafeTarget`."""
    if family not in _INET:
        why = "not an internet address (Unix and other sockets are not allowed)"
        raise UnsafeTarget(f"refused to connect to {address!r}: {why}", target=repr(address), reason=why)
    host = address[0] if isinstance(address, tuple) and address else None
    port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
    try:
        ip = ipaddress.ip_address(host) if isinstance(host, str) else None
    except ValueError:
        ip = None
    if ip is None:
        why = "not a numeric address (the socket layer would resolve it unchecked)"
        raise UnsafeTarget(f"refused to connect to {host!r}: {why}", target=str(host), reason=why)
    why_not = classify_ip(ip, allow_loopback=allow_loopback)
    if why_not is not None:
        raise UnsafeTarget(f"refused to connect to {ip} (port {port}): {why_not}", target=str(ip), reason=why_not)
    return str(ip)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    scope = _SCOPE.get()
    if scope is None:
        return
    sock, address = args[0], args[1]
    if address is None:  # sendmsg on a connected socket: its connect was vetted
        return
    try:
        vet_address(getattr(sock, "family", -1), address, allow_loopback=scope.allow_loopback)
    except UnsafeTarget as exc:
        scope.refused.append(exc)
        raise Refused(exc) from None


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True


@contextmanager
def guarded(*, allow_loopback: bool = False) -> Iterator[DialScope]:
    """Vet every connection made in this context (and in contexts copied from it) until exit.

    ``allow_loopback`` is the operator's ``delivery.allow_loopback_targets``, as for webhooks.
    """
    _install()
    scope = DialScope(allow_loopback=allow_loopback)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
