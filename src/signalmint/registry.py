"""Plugin kinds and how they are found.

Sources and detectors are found through entry points, built-ins included
(``pyproject.toml`` registers them exactly as a third-party package would)::

    [project.entry-points."signalmint.sources"]
    synthetic = "signalmint.sources.synthetic:SyntheticMarket"

    [project.entry-points."signalmint.detectors"]
    volume_spike = "signalmint.detectors.volume_spike:VolumeSpike"

    [project.entry-points."signalmint.channels"]
    webhook = "signalmint.delivery.channels.webhook:WebhookChannel"

A plugin class carries ``kind`` (its name in config) and ``Options`` (a
pydantic model of its settings); it is built as ``cls(**options.model_dump())``.
Nothing is loaded at import time: a :class:`Registry` is created and passed in.

Columns are declared on the class. A source's ``schema`` is the columns it gives and a
detector's ``needs`` the columns it reads (name -> ``metric``, ``bar`` or ``text``), each
either a mapping (a ``ClassVar``) or a classmethod of the validated options, since options
often name the columns (``threshold``'s ``column``). A source that declares nothing gives
market bars (:data:`~signalmint.records.BAR_SCHEMA`); a detector that declares nothing
needs nothing. ``signalmint check`` refuses a detector need its source does not meet.

A channel (the outbox's services) carries no ``Options``: it is configured by a URL, and its
class attributes tell the rest of the code what it is (see
:class:`~signalmint.delivery.channels.base.Channel`). Every list of channels (plan
validation, the dashboard, the worker's rendering) is derived from the installed ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

from pydantic import BaseModel

from .errors import ConfigError
from .records import BAR_SCHEMA, COLUMN_KINDS, PULL_CHANNELS, ColumnKind, Frame, Schema, Scores, satisfies

__all__ = [
    "GROUPS",
    "Detector",
    "Plugin",
    "Registry",
    "Source",
    "all_channels",
    "channel_class",
    "channel_kinds",
    "declared",
    "default_registry",
    "in_display_order",
    "missing_columns",
]

GROUPS = {"source": "signalmint.sources", "detector": "signalmint.detectors", "channel": "signalmint.channels"}


class Plugin(Protocol):
    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]


@runtime_checkable
class Detector(Protocol):
    """Learns from and scores a whole columnar batch at once, keeping state per key."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def update(self, frame: Frame) -> Scores: ...


@runtime_checkable
class Source(Protocol):
    """An async stream of frames (normally one frame per tick).

    ``stream(since)`` skips bars at or before ``since`` so a restart resumes
    where the last committed frame ended. Rows that fail validation are
    dropped and counted in ``rejected`` (reason -> count), never raised.

    Optional attributes feed the guardrails (signalmint/engine/freshness.py): ``cadence``
    (a timedelta between two bars of a key; else a ccxt-like ``timeframe`` such as
    ``"1m"`` is read), ``live`` (bar times follow the clock: staleness and late signals
    apply; default true for a source with a ``timeframe``, else false) and ``calendar``
    (``"always"``, ``"us_equities"`` or an object with ``session_start(at)`` and
    ``open_between(a, b)``). They are not part of this protocol's runtime check.
    """

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    @property
    def rejected(self) -> Mapping[str, int]: ...

    def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]: ...


@dataclass
class Registry:
    """The plugin classes available to this process, by kind name.

    Entry points are loaded on first use, so a broken third-party plugin only
    fails the automations that use it, with a clear message.
    """

    sources: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entry_points(cls) -> Registry:
        found: dict[str, dict[str, Any]] = {what: {} for what in GROUPS}
        for what, group in GROUPS.items():
            for ep in entry_points(group=group):
                found[what][ep.name] = ep
        return cls(sources=found["source"], detectors=found["detector"], channels=found["channel"])

    def kinds(self, what: str) -> dict[str, Any]:
        if what not in GROUPS:
            raise ValueError(f"unknown plugin group {what!r}")
        return {"source": self.sources, "detector": self.detectors, "channel": self.channels}[what]

    def get(self, what: str, kind: str) -> type[Any]:
        kinds = self.kinds(what)
        if kind not in kinds:
            known = ", ".join(sorted(kinds)) or "none installed"
            raise ConfigError(f"unknown {what} kind {kind!r}", hint=f"use one of: {known}")
        found = kinds[kind]
        if isinstance(found, EntryPoint):
            try:
                found = kinds[kind] = found.load()
            except Exception as exc:
                raise ConfigError(
                    f"the {what} plugin {kind!r} ({found.value}) failed to load: {exc}",
                    hint="reinstall the package that provides it",
                ) from exc
        return cast(type[Any], found)

    def build(self, what: str, kind: str, options: Mapping[str, Any]) -> Any:
        cls = self.get(what, kind)
        validated = cls.Options.model_validate(dict(options))
        return cls(**validated.model_dump())


@cache
def default_registry() -> Registry:
    """The process's registry of installed plugins, read once (``default_registry.cache_clear()`` rereads)."""
    return Registry.from_entry_points()


def channel_kinds() -> tuple[str, ...]:
    """The outbox channels installed (``signalmint.channels`` entry points), sorted; none is loaded.

    >>> {"apprise", "email", "telegram", "webhook"} <= set(channel_kinds())
    True
    """
    return tuple(sorted(default_registry().channels))


def all_channels() -> tuple[str, ...]:
    """Every channel a plan can allow: the pull channels, then the installed outbox channels."""
    return PULL_CHANNELS + tuple(k for k in channel_kinds() if k not in PULL_CHANNELS)


def in_display_order(kinds: Iterable[str]) -> tuple[str, ...]:
    """Channel kinds in the order pages list them: each class's ``position`` (plugins default 100), then name."""
    return tuple(sorted(kinds, key=lambda kind: (getattr(channel_class(kind), "position", 100), kind)))


def channel_class(kind: str) -> type[Any]:
    """The class of an installed outbox channel (its module is imported on first use)."""
    return default_registry().get("channel", kind)


def declared(cls: Any, options: BaseModel | Mapping[str, Any] | None = None) -> dict[str, ColumnKind]:
    """The columns a plugin class declares: a source's ``schema``, a detector's ``needs``.

    ``options`` (validated or not; the defaults when ``None``) are passed to a declaration
    that is a method. A kind outside ``metric``, ``bar``, ``text`` is a :class:`ConfigError`.
    """
    is_source = hasattr(cls, "stream")
    value = getattr(cls, "schema" if is_source else "needs", None)
    if value is None:
        return dict(BAR_SCHEMA) if is_source else {}
    if callable(value):
        if not isinstance(options, BaseModel):
            options = cls.Options.model_validate(dict(options or {}))
        value = value(options)
    schema = dict(cast(Schema, value))
    for name, kind in schema.items():
        if kind not in COLUMN_KINDS:
            raise ConfigError(
                f"{cls.__name__} declares column {name!r} of kind {kind!r}",
                hint="column kinds are " + ", ".join(COLUMN_KINDS),
            )
    return schema


def missing_columns(given: Schema, needed: Schema) -> list[str]:
    """The needs not met by ``given``, as sentences (empty when all are met).

    >>> missing_columns({"price": "metric"}, {"price": "metric", "title": "text"})
    ["the text column 'title' (the source gives: price)"]
    >>> missing_columns({"title": "metric"}, {"title": "text"})
    ["the text column 'title' (the source's 'title' is a metric column)"]
    """
    out = []
    for name, kind in needed.items():
        have = given.get(name)
        if have is None:
            out.append(f"the {kind} column {name!r} (the source gives: {', '.join(given) or 'nothing'})")
        elif not satisfies(have, kind):
            out.append(f"the {kind} column {name!r} (the source's {name!r} is a {have} column)")
    return out
