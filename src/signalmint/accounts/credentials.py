"""API keys, one-time tokens, admin passwords and CSRF tokens.

Named ``credentials`` rather than ``secrets`` so that it never shadows the
standard library module it is built on.

Two kinds of hashing, chosen by how much entropy the secret carries:

- API keys, magic-link tokens and session ids are 32 random bytes, far beyond
  guessing, so a fast keyed hash is right: HMAC-SHA256 under a *pepper* that
  lives in the settings, not in the database. A database dump alone then
  cannot even test a guess.
- Admin passwords are chosen by people, so they get argon2id (argon2-cffi's
  ``PasswordHasher`` defaults), which is deliberately slow and memory-hard.

An API key reads ``sm_<prefix>_<secret>``: the 8-character prefix is public
(store it in clear, unique, to find the row), the secret is 32 random bytes
in URL-safe base64. :func:`parse_api_key` checks the exact shape, so junk is
refused before any database lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

__all__ = [
    "API_KEY_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MIN_PEPPER_BYTES",
    "IssuedKey",
    "check_csrf",
    "csrf_token",
    "hash_password",
    "hash_token",
    "needs_rehash",
    "new_api_key",
    "new_token",
    "parse_api_key",
    "verify_password",
    "verify_token",
]

MIN_PEPPER_BYTES = 16
"""Shortest pepper :func:`hash_token` accepts; settings should check it at load."""

MAX_TOKEN_LENGTH = 256
"""Longer presented tokens are refused without hashing them."""

_SECRET_BYTES = 32
_PREFIX_BYTES = 5  # 40 bits -> exactly 8 base32 characters, no padding
_SECRET_CHARS = 43  # len(secrets.token_urlsafe(32))
API_KEY_LENGTH = len("sm_") + 8 + len("_") + _SECRET_CHARS
"""Every API key is exactly this many characters long (55)."""

_API_KEY = re.compile(r"sm_([a-z2-7]{8})_[A-Za-z0-9_-]{43}", re.ASCII)  # 43 == _SECRET_CHARS
_CSRF_LABEL = b"signalmint csrf v1\x00"
_HASHER = PasswordHasher()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly issued API key: show ``text`` to its owner once, store the rest.

    ``repr`` leaves the key text out, so logging an ``IssuedKey`` leaks nothing.
    """

    prefix: str
    text: str = field(repr=False)
    hash: str


def _check_pepper(pepper: bytes) -> None:
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the pepper must be at least {MIN_PEPPER_BYTES} bytes, not {len(pepper)}")


def hash_token(text: str, pepper: bytes) -> str:
    """HMAC-SHA256 of ``text`` under ``pepper``, as 64 hex characters.

    >>> hash_token("sm_abcdefgh_example", b"0123456789abcdef")[:16]
    'ffb3f48ff3f2d971'
    """
    _check_pepper(pepper)
    return hmac.new(pepper, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def verify_token(text: str, stored_hash: str, pepper: bytes) -> bool:
    """Whether ``text`` hashes to ``stored_hash``, compared in constant time.

    >>> pepper = b"0123456789abcdef"
    >>> verify_token("abc", hash_token("abc", pepper), pepper)
    True
    >>> verify_token("abd", hash_token("abc", pepper), pepper)
    False
    """
    if len(text) > MAX_TOKEN_LENGTH:
        return False
    expected = hash_token(text, pepper).encode("ascii")
    return hmac.compare_digest(expected, stored_hash.encode("utf-8", "surrogatepass"))


def new_api_key(pepper: bytes) -> IssuedKey:
    """A new random API key, with its public prefix and its hash for storage.

    Prefixes are 40 random bits: give the column a unique constraint and issue
    again on the (rare) collision.
    """
    prefix = base64.b32encode(secrets.token_bytes(_PREFIX_BYTES)).decode("ascii").lower()
    text = f"sm_{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return IssuedKey(prefix=prefix, text=text, hash=hash_token(text, pepper))


def parse_api_key(text: str) -> tuple[str, str] | None:
    """``(prefix, text)`` when ``text`` has the exact shape of an API key, else ``None``.

    >>> parse_api_key("sm_abcdefgh_" + "A" * 43)
    ('abcdefgh', 'sm_abcdefgh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')
    >>> parse_api_key("sm_ABCDEFGH_" + "A" * 43) is None  # the prefix is lower case
    True
    >>> parse_api_key("Bearer sm_abcdefgh_" + "A" * 43) is None
    True
    """
    if len(text) != API_KEY_LENGTH:
        return None
    match = _API_KEY.fullmatch(text)
    return None if match is None else (match.group(1), text)


def new_token(pepper: bytes) -> tuple[str, str]:
    """``(token_text, token_hash)`` for a magic link or a session id.

    Give the text to the user, store only the hash, check with :func:`verify_token`.
    """
    text = secrets.token_urlsafe(_SECRET_BYTES)
    return text, hash_token(text, pepper)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (PHC string format, salt included)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; ``False`` for a wrong password or a broken hash.

    >>> verify_password("not a hash", "hunter2")
    False
    """
    try:
        return _HASHER.verify(password_hash, password)
    except (Argon2Error, ValueError):  # ValueError: InvalidHashError, non-ASCII hash, lone surrogates
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether a hash was made with weaker parameters than today's; rehash at next login.

    An unreadable hash needs replacing too, so it answers ``True``.
    """
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (Argon2Error, ValueError):
        return True


def csrf_token(session_secret: str, pepper: bytes) -> str:
    """The CSRF token for a session: stable for the session, useless without the pepper.

    Domain-separated from :func:`hash_token`, so the token embedded in pages is
    never the session hash stored in the database.

    >>> pepper = b"0123456789abcdef"
    >>> csrf_token("session", pepper) == csrf_token("session", pepper)
    True
    >>> csrf_token("session", pepper) == hash_token("session", pepper)
    False
    """
    _check_pepper(pepper)
    message = _CSRF_LABEL + session_secret.encode("utf-8", "surrogatepass")
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def check_csrf(session_secret: str, submitted: str, pepper: bytes) -> bool:
    """Whether ``submitted`` is the CSRF token of this session, compared in constant time.

    >>> pepper = b"0123456789abcdef"
    >>> check_csrf("session", csrf_token("session", pepper), pepper)
    True
    >>> check_csrf("other session", csrf_token("session", pepper), pepper)
    False
    """
    if not session_secret or not submitted:
        return False
    expected = csrf_token(session_secret, pepper).encode("ascii")
    return hmac.compare_digest(expected, submitted.encode("utf-8", "surrogatepass"))
