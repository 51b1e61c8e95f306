"""Accounts: sign-up, sign-in, sessions and API keys, the operator's tools over them, and the mail they send.

:mod:`.service` runs the flows over the store; :mod:`.credentials` hashes and checks every secret;
:mod:`.admin` is what an operator does to subscribers; :mod:`.mail` sends the account and billing email.
"""

from __future__ import annotations

from .admin import Operator, summary_json
from .credentials import (
    API_KEY_LENGTH,
    MAX_TOKEN_LENGTH,
    MIN_PEPPER_BYTES,
    IssuedKey,
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
from .mail import Email, LogMailer, Mailer, SmtpMailer, mailer_for
from .service import Accounts, Redeemed, SignupResult, server_pepper

__all__ = [
    "API_KEY_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MIN_PEPPER_BYTES",
    "Accounts",
    "Email",
    "IssuedKey",
    "LogMailer",
    "Mailer",
    "Operator",
    "Redeemed",
    "SignupResult",
    "SmtpMailer",
    "check_csrf",
    "csrf_token",
    "hash_password",
    "hash_token",
    "mailer_for",
    "needs_rehash",
    "new_api_key",
    "new_token",
    "parse_api_key",
    "server_pepper",
    "summary_json",
    "verify_password",
    "verify_token",
]
