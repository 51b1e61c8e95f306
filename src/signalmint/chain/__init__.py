"""The tamper-evident track record: hashing a signal log (:mod:`.hashing`) and checking a running
instance's public chains from outside (:mod:`.remote`).
"""

from __future__ import annotations

from .hashing import ChainReport, chain_record, commitment, hash_v1, hash_v2, new_salt, verify_records
from .remote import RemoteError, verify_remote

__all__ = [
    "ChainReport",
    "RemoteError",
    "chain_record",
    "commitment",
    "hash_v1",
    "hash_v2",
    "new_salt",
    "verify_records",
    "verify_remote",
]
