"""Id generation and validation (platform §1.1).

Minted ids are ``<prefix>_<ulid>``: a canonical 26-character ULID in upper-case
Crockford base32, so ids sort by creation time. Request ids are the exception
(see :mod:`scaicommon.requestid`).
"""

from __future__ import annotations

import os
import re
import threading
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

PREFIXES = frozenset(
    {
        "job",
        "spkr",
        "voice",
        "sess",
        "rtc",
        "usage",
        "audit",
        "apikey",
        "cons",
        "era",
        "blk",
        "budget",
    }
)

_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_ulid() -> str:
    """Return a new monotonic ULID (26 characters, upper-case Crockford base32)."""
    global _last_ms, _last_rand
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            # Same millisecond (or a clock step back): keep ordering by incrementing.
            now_ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = now_ms, rand
    return _encode(now_ms, 10) + _encode(rand, 16)


def new_id(prefix: str) -> str:
    """Mint ``<prefix>_<ulid>``; the prefix must be one of :data:`PREFIXES`."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{new_ulid()}"


def is_valid_id(value: str, prefix: str) -> bool:
    """Whether ``value`` is a well-formed id with the given prefix."""
    head, sep, tail = value.partition("_")
    return sep == "_" and head == prefix and bool(_ULID_RE.match(tail))


def is_valid_external_id(value: str) -> bool:
    """Whether a tenant, user or partner id from elsewhere is safe to use (no ``:``)."""
    return bool(EXTERNAL_ID_RE.match(value))
