"""Hash schemes: the bridge from a scheme-1 chain to scheme 2 never shows a hidden scheme-1 hash."""

from __future__ import annotations

from datetime import UTC, datetime

from signalmint.access import mask, masked_json
from signalmint.chain.hashing import chain_record, commitment, hash_v1, hash_v2, verify_records
from signalmint.delivery.shapes import signal_json
from signalmint.records import Plan, Signal

T = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
FREE = Plan(id="free", version=1, name="Free", automations=("a",), masked_fields=frozenset({"volume", "score"}))


def _pair() -> tuple[Signal, Signal]:
    h1 = hash_v1("a", 1, "AAPL", T.isoformat(), "spike", 5.0, {"volume": 1200.0}, "")
    old = Signal("a", "AAPL", T, "spike", 5.0, {"volume": 1200.0}, seq=1, hash=h1, scheme=1, id=1)
    salt = "ab" * 16
    c = commitment(salt, 6.0, {"volume": 1300.0})
    h2 = hash_v2("a", 2, "MSFT", T.isoformat(), "spike", c, h1)
    new = Signal(
        "a", "MSFT", T, "spike", 6.0, {"volume": 1300.0}, seq=2, prev_hash=h1, hash=h2,
        scheme=2, prev_scheme=1, salt=salt, commitment=c, id=2,
    )  # fmt: skip
    return old, new


def test_a_masked_bridge_hides_the_scheme_1_hash_it_links_to() -> None:
    old, new = _pair()
    assert mask(old, FREE).hash == "" and mask(old, FREE).prev_hash == ""
    seen = mask(new, FREE)
    assert seen.hash == new.hash and seen.prev_hash == "" and seen.salt == "" and seen.commitment == new.commitment
    doc = masked_json(signal_json(new), FREE.masked_fields)
    assert doc["hash"] == new.hash and doc["prev_hash"] is None and doc["salt"] is None
    records = [chain_record(old, revealed=False), chain_record(new, revealed=False)]
    assert records[0]["hash"] is None and records[1]["prev_hash"] is None and records[1]["hash"] == new.hash
    report = verify_records("a", records)
    assert report.ok and report.checked == 0 and report.unverified == 2


def test_once_revealed_the_bridge_verifies_end_to_end() -> None:
    old, new = _pair()
    report = verify_records("a", [chain_record(old, revealed=True), chain_record(new, revealed=True)])
    assert report.ok and report.checked == 2 and report.opened == 1
    forged = {**chain_record(new, revealed=True), "payload": {"volume": 1301.0}}
    bad = verify_records("a", [chain_record(old, revealed=True), forged])
    assert not bad.ok and bad.bad_seq == 2 and "commitment" in bad.reason
