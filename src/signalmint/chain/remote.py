"""``signalmint verify --url``: download a running instance's public chains and check them.

Walks ``GET /api/v1/automations`` then ``GET /api/v1/chain?automation=...`` page by page
(``X-Next-After``), feeding the records to :func:`signalmint.chain.hashing.verify_records` as they
arrive: every link is recomputed, and every revealed payload is checked against the commitment
its signal published when it fired.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from ..errors import SignalmintError
from .hashing import ChainReport, verify_records

__all__ = ["RemoteError", "verify_remote"]


class RemoteError(SignalmintError):
    """The instance could not be read (unreachable, not signalmint, or a malformed answer)."""


def _get(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach {client.base_url}{path}: {exc}") from None
    if response.status_code != 200:
        raise RemoteError(f"{client.base_url}{path} answered {response.status_code}: {response.text[:200]}")
    return response


def _records(client: httpx.Client, automation: str, page: int) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        response = _get(client, "/api/v1/chain", automation=automation, after=after, limit=page)
        for number, line in enumerate(response.text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise RemoteError(f"line {number} of the {automation} chain (after {after}) is not JSON") from None
            if not isinstance(record, dict):
                raise RemoteError(f"line {number} of the {automation} chain (after {after}) is not an object")
            yield record
        nxt = response.headers.get("X-Next-After")
        if nxt is None or not nxt.isdigit() or int(nxt) <= after:
            return
        after = int(nxt)


def verify_remote(
    url: str, automation: str | None = None, *, page: int = 1000, timeout: float = 30
) -> list[ChainReport]:
    """Check the public chain of every automation (or one) of the instance at ``url``."""
    if not url.startswith(("http://", "https://")):
        raise RemoteError(f"{url!r} is not an http(s) address")
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, follow_redirects=True) as client:
        if automation is not None:
            names = [automation]
        else:
            try:
                items = _get(client, "/api/v1/automations").json()["items"]
                names = sorted(str(item["name"]) for item in items)
            except (ValueError, KeyError, TypeError):
                raise RemoteError(f"{url} does not look like a signalmint instance (GET /api/v1/automations)") from None
        return [verify_records(name, _records(client, name, page)) for name in names]
