"""The hash chain: each record stores the hash of the record before it.

The hash is BLAKE2b truncated to 16 bytes over the exact msgpack bytes of a
record (which include its own ``prev``), so changing, removing or moving any
record breaks the link to the next one. With a ``key`` (kept away from the
log) the chain is a MAC chain: whoever can write the log but not read the key
cannot forge a consistent rewrite either.
"""

from __future__ import annotations

import hashlib
from typing import Final

HASH_SIZE: Final = 16
GENESIS: Final = bytes(HASH_SIZE)  # ``prev`` of seq 1


def record_hash(payload: bytes, key: bytes | None = None) -> bytes:
    return hashlib.blake2b(payload, digest_size=HASH_SIZE, key=key or b"").digest()
