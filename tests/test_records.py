"""records.quick: the fast ``__init__`` of hot records keeps every dataclass behaviour."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from signalmint.records import Delivery, quick

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_quick_record_behaves_as_its_dataclass() -> None:
    row = Delivery(1, 2, 3, 4, "msg_x", "pending", AT, AT, 0, group_key="g")
    same = Delivery(id=1, signal_id=2, endpoint_id=3, subscriber_id=4, idempotency_id="msg_x", status="pending",
                    not_before=AT, next_attempt_at=AT, attempts=0, group_key="g")  # fmt: skip
    assert row == same and hash(row) == hash(same) and row.last_error is None and row.group_key == "g"
    assert pickle.loads(pickle.dumps(row)) == row
    assert dataclasses.replace(row, attempts=2).attempts == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.status = "sent"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Delivery(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Delivery(1, 2, 3, 4, "m", "pending", AT, AT, 0, nonsense=1)  # type: ignore[call-arg]


def test_quick_refuses_what_it_cannot_build_faithfully() -> None:
    @dataclass(frozen=True, slots=True)
    class Factory:
        items: list[int] = field(default_factory=list)

    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            assert self.x > 0

    for cls in (Factory, Mutable, Checked):
        with pytest.raises(TypeError, match="quick"):
            quick(cls)
