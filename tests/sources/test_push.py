"""The ``push`` source's own parts: body parsing and signature checks (the route: tests/web/test_ingest.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalmint.sources.push import Refused, parse_points, secret_key, sign, verify_signature

NOW = datetime(2026, 12, 6, 10, tzinfo=UTC)
KEY = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
point = st.fixed_dictionaries(
    {"key": json_values | st.text(min_size=1, max_size=10)},
    optional={
        "time": json_values | st.just("2026-12-06T09:00:00Z"),
        "metrics": st.dictionaries(st.sampled_from(["v", "w"]), json_values, max_size=2),
        "texts": st.dictionaries(st.sampled_from(["note", "x"]), json_values, max_size=2),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"points": st.lists(point | json_values, max_size=5)})))
def test_any_body_is_a_frame_or_a_422_never_another_error(body: Any) -> None:
    try:
        frame = parse_points(json.dumps(body).encode(), ["v"], ["note"], 3, NOW)
    except Refused as refused:
        assert refused.status == 422 and refused.message
        return
    assert 1 <= len(frame) <= 3
    assert set(frame.columns) == {"v"} and set(frame.texts) == {"note"}
    assert not np.isinf(frame.columns["v"]).any()
    assert all(k.strip() for k in frame.keys.tolist())


def test_a_point_maps_to_a_row_with_missing_columns_as_missing() -> None:
    body = b'{"points": [{"key": "a", "time": "2026-12-06T09:00:00+01:00", "metrics": {"v": 2}}, {"key": "b"}]}'
    frame = parse_points(body, ["v"], ["note"], 10, NOW)
    assert frame.keys.tolist() == ["a", "b"]
    assert frame.times[0] == np.datetime64("2026-12-06T08:00:00", "ns")  # +01:00 read as UTC
    assert frame.times[1] == np.datetime64("2026-12-06T10:00:00", "ns")  # no time: when it arrived
    assert frame.columns["v"][0] == 2.0 and np.isnan(frame.columns["v"][1])
    assert frame.texts["note"].tolist() == [None, None]


def test_signatures_verify_in_either_position_and_refuse_a_changed_body() -> None:
    now = NOW.timestamp()
    good = sign(KEY, "msg_1", int(now), b"{}")
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now)), "webhook-signature": f"v1,bm9wZQ== {good}"}
    assert verify_signature(KEY, headers, b"{}", now, timedelta(minutes=5)) == "msg_1"
    with pytest.raises(Refused, match="does not match"):
        verify_signature(KEY, headers, b"{ }", now, timedelta(minutes=5))
    with pytest.raises(Refused, match="Unix seconds"):
        verify_signature(KEY, headers | {"webhook-timestamp": "soon"}, b"{}", now, timedelta(minutes=5))
