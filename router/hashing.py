"""Stable hashing of routing keys to points in [0, 1).

Sticky assignment must agree across processes, hosts and restarts, so it cannot use Python's
hash() (salted per process). BLAKE2b is in the standard library, fast on short inputs and the
same everywhere.
"""

from __future__ import annotations

import hashlib

# Versions the scheme: changing it reassigns every key of every endpoint.
_PERSON = b"swy-route-v1"
# A double holds every multiple of 2**-53 in [0, 1) exactly, so the point is exact everywhere.
_BITS = 53


def key_point(*parts: str) -> float:
    """A uniform, deterministic point in [0, 1) for the sequence of strings `parts`."""
    digest = hashlib.blake2b(digest_size=8, person=_PERSON)
    for part in parts:
        data = part.encode()
        # Length-prefixed, so ("ab", "c") and ("a", "bc") hash apart.
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return (int.from_bytes(digest.digest(), "big") >> (64 - _BITS)) / (1 << _BITS)
