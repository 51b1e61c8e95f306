"""The whole error tree of signalmint, in one place.

Every error a user can meet derives from :class:`SignalmintError`, so a caller
can catch one class and print a clear message instead of a traceback::

    SignalmintError
    ├── ConfigError      a config file or setting is wrong (file, line, key, hint)
    ├── SourceError      a source cannot produce data at all (bad rows are counted, not raised)
    ├── DetectorError    a detector was built or fed wrongly
    ├── StoreError       the database refused, or its contents are not what we wrote
    │   ├── ChainError   the signal hash chain does not verify
    │   └── LeaseLost    an engine's lease on an automation was taken: it must not commit
    ├── DeliveryError    a channel could not deliver (permanent or retryable)
    ├── BillingError     a payment provider or the ledger refused
    └── AccessError      a plan or entitlement forbids the request
        └── LimitError   a per-subscriber cap is reached (API keys, endpoints, watchlist)
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "BillingError",
    "ChainError",
    "ConfigError",
    "DeliveryError",
    "DetectorError",
    "LeaseLost",
    "LimitError",
    "SignalmintError",
    "SourceError",
    "StoreError",
]


class SignalmintError(Exception):
    """Base class of every error signalmint raises on purpose."""


class ConfigError(SignalmintError):
    """A configuration problem, located as precisely as we can.

    ``str(err)`` reads ``file:line: key: message`` followed by a hint of what to
    write instead, when one is known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.key}: " if self.key else ""
        text = f"{where}{key}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SourceError(SignalmintError):
    """A source cannot produce data (missing file, unreadable format...)."""


class DetectorError(SignalmintError):
    """A detector was configured or fed in a way it cannot handle."""


class StoreError(SignalmintError):
    """The store refused an operation or holds unexpected data."""


class ChainError(StoreError):
    """The tamper-evident hash chain of an automation's signals is broken."""

    def __init__(self, message: str, *, automation: str, seq: int) -> None:
        self.automation = automation
        self.seq = seq
        super().__init__(message)


class LeaseLost(StoreError):
    """An engine tried to commit for an automation whose lease it no longer holds at its epoch
    (it was paused past its lease and another engine took over): the transaction is rolled back."""

    def __init__(self, message: str, *, automation: str) -> None:
        self.automation = automation
        super().__init__(message)


class DeliveryError(SignalmintError):
    """A channel failed to deliver a message.

    ``permanent`` says retrying cannot help; ``retry_after`` (seconds) is the
    receiver's own hint of when to try again.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(message)


class BillingError(SignalmintError):
    """A payment provider or the credits ledger refused an operation."""


class AccessError(SignalmintError):
    """A plan or entitlement forbids what was asked."""


class LimitError(AccessError):
    """A per-subscriber cap is reached: ``cap`` is how many the subscriber may have.

    Each cap is enforced by the one store function that adds the thing it counts, so every
    path (API, dashboard, bot, CLI) meets the same limit.
    """

    def __init__(self, message: str, *, cap: int) -> None:
        self.cap = cap
        super().__init__(message)
