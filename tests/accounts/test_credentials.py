"""API keys, one-time tokens, argon2 passwords and CSRF tokens."""

from __future__ import annotations

import re

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from signalmint.accounts.credentials import (
    API_KEY_LENGTH,
    MAX_TOKEN_LENGTH,
    check_csrf,
    csrf_token,
    hash_password,
    hash_token,
    needs_rehash,
    new_api_key,
    new_token,
    parse_api_key,
    verify_password,
    verify_token,
)

PEPPER = b"test pepper, 32 bytes long......"
OTHER_PEPPER = b"another pepper of enough length!"


# API keys


def test_api_key_round_trip() -> None:
    issued = new_api_key(PEPPER)
    assert re.fullmatch(r"sm_[a-z2-7]{8}_[A-Za-z0-9_-]{43}", issued.text)
    assert len(issued.text) == API_KEY_LENGTH
    assert parse_api_key(issued.text) == (issued.prefix, issued.text)
    assert issued.text.startswith(f"sm_{issued.prefix}_")
    assert verify_token(issued.text, issued.hash, PEPPER)


def test_api_keys_are_unique() -> None:
    keys = [new_api_key(PEPPER) for _ in range(200)]
    assert len({key.text for key in keys}) == len({key.prefix for key in keys}) == 200


def test_wrong_secret_or_pepper_fails() -> None:
    issued = new_api_key(PEPPER)
    other = new_api_key(PEPPER)
    assert not verify_token(other.text, issued.hash, PEPPER)
    tampered = issued.text[:-1] + ("A" if issued.text[-1] != "A" else "B")
    assert not verify_token(tampered, issued.hash, PEPPER)
    assert not verify_token(issued.text, issued.hash, OTHER_PEPPER)
    assert not verify_token(issued.text, issued.hash.upper(), PEPPER)
    assert not verify_token(issued.text, "", PEPPER)
    assert not verify_token(issued.text, "é" * 64, PEPPER)


def test_stored_hash_never_contains_the_secret() -> None:
    issued = new_api_key(PEPPER)
    secret = issued.text[len("sm_abcdefgh_") :]
    assert re.fullmatch(r"[0-9a-f]{64}", issued.hash)
    for piece in (issued.text, secret, secret[:8], secret[-8:]):
        assert piece not in issued.hash
    assert issued.text not in repr(issued)
    assert secret not in repr(issued)


def test_hash_is_the_hmac_of_the_pepper() -> None:
    import hashlib
    import hmac

    assert hash_token("abc", PEPPER) == hmac.new(PEPPER, b"abc", hashlib.sha256).hexdigest()
    assert hash_token("abc", PEPPER) != hash_token("abc", OTHER_PEPPER)


@pytest.mark.parametrize("pepper", [b"", b"short"])
def test_a_short_pepper_is_refused(pepper: bytes) -> None:
    with pytest.raises(ValueError, match="pepper"):
        hash_token("abc", pepper)
    with pytest.raises(ValueError, match="pepper"):
        new_api_key(pepper)


GOOD = "sm_abcdefgh_" + "A" * 43


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sm_",
        "sm_abcdefgh_",
        GOOD + "A",  # one too long
        GOOD[:-1],  # one too short
        GOOD * 1000,
        "pk_abcdefgh_" + "A" * 43,  # wrong scheme
        "SM_abcdefgh_" + "A" * 43,
        "sm-abcdefgh-" + "A" * 43,
        "sm_abcdefg1_" + "A" * 43,  # 1 is not base32
        "sm_ABCDEFGH_" + "A" * 43,
        "sm_abcdefg_" + "A" * 44,  # short prefix, length made up by the secret
        "sm_abcdefghi_" + "A" * 42,
        "sm_abcdefgh_" + "A" * 42 + "=",
        "sm_abcdefgh_" + "A" * 42 + "é",  # non-ASCII
        "sm_abcdefgh_" + "A" * 42 + "\u0660",  # Arabic-Indic digit zero: \w would take it
        "sm_abcdéfgh_" + "A" * 43,
        "sm_abcdefgh_" + "A" * 42 + "\n",
        " " + GOOD[1:],
        GOOD[:-1] + " ",
        "sm_abcdefgh_" + "A" * 21 + " " + "A" * 21,
    ],
)
def test_malformed_keys_are_rejected(text: str) -> None:
    assert parse_api_key(text) is None


def test_parse_keeps_secrets_with_underscores() -> None:
    text = "sm_abcdefgh_" + "_-" * 21 + "a"
    assert parse_api_key(text) == ("abcdefgh", text)


@given(st.text(max_size=80))
def test_parse_accepts_only_the_exact_shape(text: str) -> None:
    parsed = parse_api_key(text)
    if parsed is not None:
        assert parsed == (text[3:11], text)
        assert text.isascii() and len(text) == API_KEY_LENGTH


# One-time tokens


def test_token_round_trip() -> None:
    text, stored = new_token(PEPPER)
    assert len(text) == 43 and re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert stored == hash_token(text, PEPPER)
    assert text not in stored
    assert verify_token(text, stored, PEPPER)
    assert not verify_token(text, stored, OTHER_PEPPER)
    assert not verify_token(new_token(PEPPER)[0], stored, PEPPER)


def test_overlong_tokens_are_refused_without_hashing() -> None:
    long_text = "A" * (MAX_TOKEN_LENGTH + 1)
    assert not verify_token(long_text, hash_token(long_text, PEPPER), PEPPER)


@given(st.text(max_size=MAX_TOKEN_LENGTH), st.text())
def test_verify_token_never_raises(text: str, stored: str) -> None:
    assert verify_token(text, stored, PEPPER) == (stored == hash_token(text, PEPPER))


# Passwords


def test_password_round_trip() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "correct horse battery stapler")
    assert not verify_password(stored, "")
    assert hash_password("correct horse battery staple") != stored  # salted
    assert not needs_rehash(stored)


@pytest.mark.parametrize(
    "stored",
    ["", "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$", "$argon2id$v=19$m=1,t=1,p=1$$", "é", "$2b$12$x"],
)
def test_broken_hashes_verify_false(stored: str) -> None:
    assert verify_password(stored, "whatever") is False
    assert needs_rehash(stored)


def test_odd_passwords_never_raise() -> None:
    stored = hash_password("pässwörd 🔑")
    assert verify_password(stored, "pässwörd 🔑")
    assert not verify_password(stored, "\ud800")  # a lone surrogate cannot be encoded
    assert not verify_password(stored, "x" * 10_000)


def test_weaker_hashes_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(weak, "pw")
    assert needs_rehash(weak)


# CSRF


def test_csrf_round_trip() -> None:
    session, _ = new_token(PEPPER)
    token = csrf_token(session, PEPPER)
    assert token == csrf_token(session, PEPPER)
    assert check_csrf(session, token, PEPPER)


def test_csrf_mismatch() -> None:
    session, stored_session_hash = new_token(PEPPER)
    other, _ = new_token(PEPPER)
    token = csrf_token(session, PEPPER)
    assert not check_csrf(other, token, PEPPER)
    assert not check_csrf(session, csrf_token(other, PEPPER), PEPPER)
    assert not check_csrf(session, token, OTHER_PEPPER)
    assert not check_csrf(session, "", PEPPER)
    assert not check_csrf(session, token[:-1], PEPPER)
    assert not check_csrf(session, "é" + token[1:], PEPPER)
    assert not check_csrf("", csrf_token("", PEPPER), PEPPER)  # no session, no token
    # The token shown in pages is not the session hash kept in the database.
    assert token != stored_session_hash
